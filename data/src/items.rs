//! The catalog: `GET /items` (paginated) and `GET /items/{id}`.

use std::sync::Arc;

use axum::{
    Json,
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use recsys::Item;
use serde::{Deserialize, Serialize};
use shared::fastapi::{LossyPathParams, QueryParams, ValidationErrorBody, json_error};
use utoipa::{IntoParams, ToSchema};

use crate::{AppState, insights::path_id};

/// Most items one page holds.
pub const MAX_PAGE: usize = 1000;
/// Items per page when the request gives no `limit`.
pub const DEFAULT_PAGE: usize = 100;

/// Query parameters of `GET /items` (documentation; parsing is in the handler).
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// How many items to skip (catalog order: the order of `DATA_FILE`).
    #[param(minimum = 0, default = 0)]
    pub offset: Option<i64>,
    /// How many items to return at most.
    #[param(minimum = 1, maximum = 1000, default = 100)]
    pub limit: Option<i64>,
}

/// One page of the catalog. `offset` + `items.len()` < `total` means there are more: ask again with
/// `offset` + `limit`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"items": [{"id": "books-001", "title": "Harbor Chronicles", "category": "books"}],
    "total": 480, "offset": 0, "limit": 1}))]
pub struct ItemsPage {
    /// The items, in catalog order (empty past the end).
    pub items: Vec<Item>,
    /// Number of items in the catalog.
    pub total: usize,
    /// The offset asked for.
    pub offset: usize,
    /// The limit applied.
    pub limit: usize,
}

/// One page of the catalog.
#[utoipa::path(get, path = "/items", tag = "catalog", params(PageParams),
    responses(
        (status = 200, description = "The page; past the end, `items` is empty", body = ItemsPage),
        (status = 422, description = "Invalid offset or limit", body = ValidationErrorBody),
    ))]
pub async fn list_items(
    State(state): State<Arc<AppState>>,
    query: QueryParams,
) -> Result<Json<ItemsPage>, ValidationErrorBody> {
    let offset = query.optional_int("offset", 0..=i64::MAX);
    let limit = query.optional_int("limit", 1..=MAX_PAGE as i64);
    let (offset, limit) = match (offset, limit) {
        (Ok(offset), Ok(limit)) => (offset.unwrap_or(0) as usize, limit.map_or(DEFAULT_PAGE, |n| n as usize)),
        (offset, limit) => {
            let detail = offset.err().into_iter().chain(limit.err()).map(|issue| *issue).collect();
            return Err(ValidationErrorBody { detail });
        }
    };
    let catalog = state.insights.catalog();
    let items = catalog.items().iter().skip(offset).take(limit).cloned().collect();
    Ok(Json(ItemsPage { items, total: catalog.len(), offset, limit }))
}

/// One catalog item.
#[utoipa::path(get, path = "/items/{id}", tag = "catalog",
    params(("id" = String, Path, description = "Item id", pattern = "^[A-Za-z0-9._-]{1,64}$")),
    responses(
        (status = 200, description = "The item", body = Item),
        (status = 404, description = "No such item", body = shared::fastapi::errors::ErrorBody),
        (status = 422, description = "Invalid item id", body = ValidationErrorBody),
    ))]
pub async fn get_item(State(state): State<Arc<AppState>>, path: LossyPathParams) -> Response {
    let id = match path_id(&path, "id") {
        Ok(id) => id,
        Err(issue) => return ValidationErrorBody { detail: vec![*issue] }.into_response(),
    };
    let catalog = state.insights.catalog();
    match catalog.find(&id) {
        Some(idx) => Json(catalog.item(idx).clone()).into_response(),
        None => json_error(StatusCode::NOT_FOUND, "Item not found"),
    }
}
