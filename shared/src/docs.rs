//! `GET /openapi.json` and `GET /docs` (Swagger UI compiled into the binary: no CDN, works offline).

use axum::Router;
use utoipa::openapi::OpenApi;
use utoipa_swagger_ui::SwaggerUi;

/// Routes serving the given spec and an interactive UI for it.
pub fn routes(spec: OpenApi) -> Router {
    SwaggerUi::new("/docs").url("/openapi.json", spec).into()
}
