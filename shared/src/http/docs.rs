//! `GET /openapi.json` and `GET /docs` (Swagger UI compiled into the binary: no CDN, works offline).

use axum::{
    Router,
    body::{Body, to_bytes},
    extract::{Request, State},
    http::{HeaderValue, StatusCode, Uri, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
};
use tower::ServiceExt;
use utoipa::openapi::OpenApi;
use utoipa_swagger_ui::SwaggerUi;

const DOCS: &str = "/docs";

/// Largest docs page rewritten in memory; the index is about 1 KiB.
const MAX_INDEX_BYTES: usize = 64 * 1024;

/// Routes serving the given spec and an interactive UI for it.
pub fn routes(spec: OpenApi) -> Router {
    let swagger: Router = SwaggerUi::new(DOCS).url("/openapi.json", spec).into();
    swagger.clone().layer(middleware::from_fn_with_state(swagger, docs_like_fastapi))
}

/// Serves the UI at `/docs` itself (FastAPI does; the bundled router answers a 303 to `/docs/` that plain curl
/// does not follow), and turns the bundled router's empty 404s into the JSON 404 every other route answers.
async fn docs_like_fastapi(State(swagger): State<Router>, mut req: Request, next: Next) -> Response {
    let at_bare_docs = req.uri().path() == DOCS;
    let response = if at_bare_docs {
        // Routing already picked the bundled redirect for /docs; ask the bundled router for /docs/ instead.
        *req.uri_mut() = Uri::from_static("/docs/");
        match swagger.oneshot(req).await {
            Ok(response) => response,
            Err(never) => match never {},
        }
    } else {
        next.run(req).await
    };
    if response.status() == StatusCode::NOT_FOUND {
        return crate::fastapi::errors::not_found().await;
    }
    if !at_bare_docs || response.status() != StatusCode::OK {
        return response;
    }
    // The index links its assets relatively ("./swagger-ui.css"); served at /docs they must resolve under /docs/.
    let (mut parts, body) = response.into_parts();
    let Ok(html) = to_bytes(body, MAX_INDEX_BYTES).await else {
        return crate::fastapi::json_error(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error");
    };
    let html = String::from_utf8_lossy(&html).replacen("<head>", "<head>\n    <base href=\"/docs/\">", 1);
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    (parts, Body::from(html)).into_response()
}
