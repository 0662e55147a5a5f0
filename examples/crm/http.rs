//! The HTTP side: the routes, the limits every request passes first (sizes, the request
//! timeout), and the accept loop (header-read timeout, connection cap). Each answer is
//! worked out by `App` on tokio's blocking pool.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::app::{clipped, App, Params, Reply};

/// The routes, each behind the limits.
pub(crate) fn router(app: &Arc<App>) -> Router {
    Router::new()
        .route("/members/{id}", get(member).patch(member).delete(member))
        .route("/members", get(page))
        .route("/members/export", get(export))
        .route("/policy", get(policy))
        .fallback(fallback)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(app),
            limits,
        ))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(Arc::clone(app))
}

/// Runs `answer` on tokio's blocking pool: deciding, appending to the log (a write, maybe
/// an `fsync`) and reading the database all block, and must not stall the threads that serve
/// connections.
async fn blocking(app: Arc<App>, answer: impl FnOnce(&App) -> Reply + Send + 'static) -> Reply {
    match tokio::task::spawn_blocking(move || answer(&app)).await {
        Ok(reply) => reply,
        Err(e) => {
            eprintln!("crm: a request failed: {e}");
            Reply {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                body: json!({ "error": "the request failed" }),
                request_id: String::new(),
            }
        }
    }
}

/// `GET`, `PATCH` and `DELETE /members/{id}`.
pub(crate) async fn member(
    State(app): State<Arc<App>>,
    method: Method,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
    params: Result<Query<Params>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Reply {
    blocking(app, move |app| match (id, params) {
        (Ok(Path(id)), Ok(Query(params))) => match method {
            Method::PATCH => {
                let body = body.map_err(|e| e.body_text()).and_then(|b| {
                    serde_json::from_slice(&b).map_err(|e| {
                        format!("the body is not a JSON object of field names to values: {e}")
                    })
                });
                app.patch_member(&headers, &id, params, body)
            }
            Method::DELETE => app.delete_member(&headers, &id, params),
            _ => app.get_member(&headers, &id, params),
        },
        (id, params) => {
            let why = match (id, params) {
                (Err(e), _) => e.body_text(),
                (_, Err(e)) => e.body_text(),
                _ => String::new(),
            };
            app.refuse_unread(&headers, StatusCode::BAD_REQUEST, &why)
        }
    })
    .await
}

pub(crate) async fn page(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    params: Result<Query<Params>, QueryRejection>,
) -> Reply {
    blocking(app, move |app| match params {
        Ok(Query(params)) => app.get_page(&headers, params),
        Err(e) => app.refuse_unread(&headers, StatusCode::BAD_REQUEST, &e.body_text()),
    })
    .await
}

/// `GET /members/export`: checked on the blocking pool (the principal, the plan: 403 if
/// it allows nothing), then streamed: the export runs on the blocking pool, page by page,
/// each page's JSON lines sent through a small channel (a slow client holds back the
/// reading of further pages, so at most a few pages are held at once).
pub(crate) async fn export(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    params: Result<Query<Params>, QueryRejection>,
) -> Response {
    let started = {
        let app = Arc::clone(&app);
        tokio::task::spawn_blocking(move || match params {
            Ok(Query(params)) => app.start_export(&headers, params),
            Err(e) => Err(app.refuse_unread(&headers, StatusCode::BAD_REQUEST, &e.body_text())),
        })
        .await
    };
    let ask = match started {
        Ok(Ok(ask)) => ask,
        Ok(Err(reply)) => return reply.into_response(),
        Err(e) => {
            eprintln!("crm: an export failed: {e}");
            let body = Json(json!({ "error": "the request failed" }));
            return (StatusCode::INTERNAL_SERVER_ERROR, body).into_response();
        }
    };
    let request_id = ask.request_id().to_string();
    let (tx, rx) = tokio::sync::mpsc::channel::<Vec<u8>>(2);
    tokio::task::spawn_blocking(move || {
        app.export(&ask, |chunk| tx.blocking_send(chunk).is_ok());
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|chunk| (Ok::<_, std::convert::Infallible>(Bytes::from(chunk)), rx))
    });
    let mut response = Response::new(axum::body::Body::from_stream(stream));
    let h = response.headers_mut();
    h.insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/x-ndjson"),
    );
    if let Ok(v) = axum::http::HeaderValue::from_str(&request_id) {
        h.insert("x-request-id", v);
    }
    response
}

pub(crate) async fn policy(State(app): State<Arc<App>>) -> Json<Value> {
    let (reloads, version, error) = {
        let s = match app.reload.lock() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        };
        (s.reloads, s.version.clone(), s.error.clone())
    };
    let version =
        version.unwrap_or_else(|| app.policies.current().engine.version().as_str().to_string());
    Json(json!({
        "version": version,
        "directory": app.policies.dir().display().to_string(),
        "reloads": reloads,
        "reload_error": error,
    }))
}

/// The longest request target (path and query) served.
const MAX_TARGET: usize = 8 * 1024;
/// The most header bytes (names and values) a request may carry.
const MAX_HEADERS: usize = 16 * 1024;
/// The largest body taken (a PATCH's fields).
const MAX_BODY: usize = 16 * 1024;

/// Refuses a request over the size limits before any route reads it (414 for its target,
/// 431 for its headers), logged like every response, as a small record whatever it sent.
pub(crate) async fn limits(
    State(app): State<Arc<App>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let target = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    let headers: usize = req
        .headers()
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len())
        .sum();
    let refusal = if target > MAX_TARGET {
        Some((
            StatusCode::URI_TOO_LONG,
            format!("a request target of {target} bytes: at most {MAX_TARGET}"),
        ))
    } else if headers > MAX_HEADERS {
        Some((
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            format!("{headers} bytes of headers: at most {MAX_HEADERS}"),
        ))
    } else {
        None
    };
    let Some((status, why)) = refusal else {
        // A slow body (or a stalled answer) is cut off at the request timeout: 408,
        // logged. Work already handed to the blocking pool finishes and is logged as
        // decided; only its answer is lost.
        let headers = req.headers().clone();
        return match tokio::time::timeout(app.request_timeout, next.run(req)).await {
            Ok(response) => response,
            Err(_) => {
                let why = format!("no answer within {:?}", app.request_timeout);
                refuse(app, headers, StatusCode::REQUEST_TIMEOUT, why)
                    .await
                    .into_response()
            }
        };
    };
    refuse(app, req.headers().clone(), status, why)
        .await
        .into_response()
}

/// A route asked with a method it does not answer: logged like every response, then 405.
pub(crate) async fn method_not_allowed(
    State(app): State<Arc<App>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Reply {
    let why = format!("method {method} not allowed on {}", clipped(uri.path()));
    refuse(app, headers, StatusCode::METHOD_NOT_ALLOWED, why).await
}

/// Logs a request refused before any route read it, and answers `status` with `why`.
async fn refuse(app: Arc<App>, headers: HeaderMap, status: StatusCode, why: String) -> Reply {
    blocking(app, move |app| app.refuse_unread(&headers, status, &why)).await
}

/// Any other route: logged like every response, then 404.
pub(crate) async fn fallback(
    State(app): State<Arc<App>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Reply {
    let why = format!("no such route: {method} {}", clipped(uri.path()));
    refuse(app, headers, StatusCode::NOT_FOUND, why).await
}

/// What the accept loop bounds.
pub(crate) struct ServeLimits {
    pub(crate) header_timeout: Duration,
    pub(crate) max_connections: usize,
}

/// Serves `router` on `listener`, each connection with hyper's HTTP/1 server under a
/// header-read timeout, at most `max_connections` at once (`axum::serve` has neither:
/// 20,000 half-sent requests used to exhaust the file descriptors). A request hyper
/// refuses itself (malformed HTTP) is logged as a rejection, like every answer.
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    app: Arc<App>,
    limits: ServeLimits,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    loop {
        // At the cap, stop accepting: new connections wait in the kernel's queue.
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of descriptors, say: wait a little rather than spin.
                eprintln!("crm: accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let service = TowerToHyperService::new(router.clone());
        let app = Arc::clone(&app);
        let header_timeout = limits.header_timeout;
        tokio::spawn(async move {
            let served = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .serve_connection(TokioIo::new(stream), service)
                .await;
            if let Err(e) = served {
                if e.is_parse() || e.is_parse_too_large() {
                    // hyper answered 400 (or 431) itself: the log still says so.
                    let why = format!("malformed HTTP request: {e}");
                    refuse(app, HeaderMap::new(), StatusCode::BAD_REQUEST, why).await;
                }
            }
            drop(slot);
        });
    }
}
