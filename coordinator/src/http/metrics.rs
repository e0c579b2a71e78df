//! `GET /metrics`: OpenMetrics text.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::HttpState;

pub async fn scrape(State(s): State<HttpState>) -> Response {
    let Some(m) = &s.metrics else {
        return StatusCode::NOT_FOUND.into_response();
    };
    match m.encode() {
        Ok(body) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}
