//! The router, its layers, and the serving loop with graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aimon::StorageManager;
use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use tower_http::cors::{AllowOrigin, CorsLayer};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{Scope, Tokens};
use crate::config::{Limits, ServerConfig};
use crate::error::ApiError;
use crate::ingest::{Flusher, Ingest};
use crate::telemetry::Telemetry;
use crate::{api, dashboard, events, receivers};

/// The state every handler shares.
#[derive(Clone)]
pub struct App(Arc<Shared>);

/// What [`App`] holds.
pub struct Shared {
    pub(crate) manager: Arc<StorageManager>,
    pub(crate) tokens: Tokens,
    pub(crate) ingest: Ingest,
    pub(crate) telemetry: Arc<Telemetry>,
    pub(crate) limits: Limits,
    /// Turns `true` when the server starts shutting down: event streams end then, instead of
    /// holding the shutdown for its whole grace period.
    pub(crate) closing: tokio::sync::watch::Receiver<bool>,
    /// Prometheus metadata by family name (see [`receivers::remote_write`]).
    pub(crate) prometheus_metadata: std::sync::Mutex<
        std::collections::HashMap<String, crate::remote_write::proto::MetricMetadata>,
    >,
}

impl Deref for App {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "aimon", description = "Storage for monitoring fleets of AI agents: the HTTP API of `aimon serve`."),
    modifiers(&BearerAuth)
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The routes of each scope and the OpenAPI document describing all of them.
fn routes(app: &App) -> (Router<App>, utoipa::openapi::OpenApi) {
    let read = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(api::query_metrics))
        .routes(routes!(api::get_metric))
        .routes(routes!(api::query_series))
        .routes(routes!(crate::fleet::fleet))
        .routes(routes!(api::history))
        .routes(routes!(api::query_alerts))
        .routes(routes!(api::get_alert))
        .routes(routes!(api::query_agents))
        .routes(routes!(api::get_agent))
        .routes(routes!(api::similar_alerts))
        .routes(routes!(api::similar_agents))
        .routes(routes!(api::stats))
        .routes(routes!(api::backends))
        .routes(routes!(events::events))
        .routes(routes!(receivers::own_metrics))
        .route_layer(middleware::from_fn_with_state(
            (app.clone(), Scope::Read),
            authorize,
        ));
    let write = OpenApiRouter::new()
        .routes(routes!(api::write_metrics))
        .routes(routes!(api::write_alerts))
        .routes(routes!(api::acknowledge_alert))
        .routes(routes!(api::resolve_alert))
        .routes(routes!(api::write_agents))
        .routes(routes!(receivers::remote_write))
        .routes(routes!(receivers::otlp_metrics))
        // Waiting requests have not read their bodies yet: memory stays bounded.
        .route_layer(tower::limit::ConcurrencyLimitLayer::new(
            app.limits.max_concurrent_writes,
        ))
        .route_layer(middleware::from_fn_with_state(
            (app.clone(), Scope::Write),
            authorize,
        ));
    let admin = OpenApiRouter::new()
        .routes(routes!(api::retention))
        .route_layer(middleware::from_fn_with_state(
            (app.clone(), Scope::Admin),
            authorize,
        ));
    read.merge(write).merge(admin).split_for_parts()
}

/// The whole router: every route, `GET /api/v1/openapi.json`, and the layers (request log and
/// metrics, timeout, response compression, body limit, CORS).
pub fn router(app: App, config: &ServerConfig) -> Router {
    let (routes, doc) = routes(&app);
    let doc = Arc::new(doc);
    let mut router = routes
        .route(
            "/api/v1/openapi.json",
            axum::routing::get(move || {
                let doc = Arc::clone(&doc);
                async move { axum::Json(doc.as_ref().clone()) }
            }),
        )
        .route("/", axum::routing::get(dashboard::index))
        .route("/ui/{*path}", axum::routing::get(dashboard::file))
        .fallback(|| async { ApiError::not_found("no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this route does not take this method",
            )
        })
        .layer(DefaultBodyLimit::max(config.limits.max_body_bytes))
        // gzip answers for clients that accept it; its default predicate leaves event streams,
        // small bodies and images alone.
        .layer(tower_http::compression::CompressionLayer::new())
        .layer(middleware::from_fn_with_state(app.clone(), observe))
        .with_state(app);
    if !config.cors_origins.is_empty() {
        let origins: Vec<HeaderValue> = config
            .cors_origins
            .iter()
            .filter_map(|o| HeaderValue::from_str(o).ok())
            .collect();
        router = router.layer(
            CorsLayer::new()
                .allow_origin(AllowOrigin::list(origins))
                .allow_methods([Method::GET, Method::POST])
                .allow_headers([
                    header::AUTHORIZATION,
                    header::CONTENT_TYPE,
                    header::CONTENT_ENCODING,
                ]),
        );
    }
    router
}

/// 401/403 unless the request's token has `scope`.
async fn authorize(
    State((app, scope)): State<(App, Scope)>,
    request: Request,
    next: Next,
) -> Response {
    match app.tokens.check(request.headers(), scope) {
        Ok(caller) => {
            let caller = caller.map(|c| Caller(c.to_owned()));
            let mut response = next.run(request).await;
            if let Some(caller) = caller {
                response.extensions_mut().insert(caller);
            }
            response
        }
        Err(e) => e.into_response(),
    }
}

/// The name of the token a request came with, for the request log.
#[derive(Clone)]
struct Caller(String);

/// One log line (at info, `-v`) and the request metrics per request. The route is its
/// template (`/api/v1/alerts/{id}`), never the raw path, and nothing of the query or headers
/// is logged, so no token or value the client sent reaches the log.
async fn observe(State(app): State<App>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_owned();
    // The answer's head within the request timeout (an event stream's body runs on).
    let response = match tokio::time::timeout(app.limits.request_timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "timeout",
            "the request took longer than the server's request timeout; a write may still be \
             stored (docs/server.md, \"Limits\")",
        )
        .into_response(),
    };
    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    app.telemetry
        .request(method.as_str(), &route, status, elapsed);
    let caller = response
        .extensions()
        .get::<Caller>()
        .map_or("-", |c| c.0.as_str());
    tracing::info!(
        target: "aimon_server::request",
        method = %method,
        route = %route,
        status,
        ms = format_args!("{:.1}", elapsed.as_secs_f64() * 1e3),
        token = %caller,
        "request"
    );
    response
}

/// hyper's time limit on a request's headers (HTTP/1), which needs a timer to run.
fn limit_headers(
    builder: &mut hyper_util::server::conn::auto::Builder<hyper_util::rt::TokioExecutor>,
    timeout: Duration,
) {
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(timeout);
}

/// The writers of the ingest queue: the configured number, else one for SQLite (its writes
/// take turns) and four for the others.
fn ingest_writers(manager: &StorageManager, limits: &Limits) -> usize {
    limits.ingest_writers.unwrap_or_else(|| {
        let sqlite = manager
            .router()
            .resolve(aimon::DataKind::Metrics, None)
            .is_ok_and(|b| b.backend_type() == aimon::StorageBackendType::Sqlite);
        if sqlite { 1 } else { 4 }
    })
}

/// A server bound to its address, not yet serving.
pub struct Server {
    config: ServerConfig,
    app: App,
    flusher: Flusher,
    listener: std::net::TcpListener,
    closing: tokio::sync::watch::Sender<bool>,
}

impl Server {
    /// Checks the configuration, binds the address and starts the ingest queue. Refuses a
    /// non-loopback address without tokens: an open server must not be reachable from the
    /// network by mistake.
    pub fn bind(manager: Arc<StorageManager>, config: ServerConfig) -> aimon::Result<Server> {
        config
            .validate()
            .map_err(|e| aimon::Error::config(format!("server configuration: {e}")))?;
        if config.tokens.is_empty() && !config.listen.ip().is_loopback() {
            return Err(aimon::Error::config(format!(
                "refusing to listen on {} without tokens: configure [server] tokens or \
                 AIMON_TOKENS, or listen on a loopback address",
                config.listen
            )));
        }
        let listener = std::net::TcpListener::bind(config.listen).map_err(|e| {
            aimon::Error::new(
                aimon::ErrorKind::Unavailable,
                format!("cannot listen on {}: {e}", config.listen),
            )
        })?;
        listener.set_nonblocking(true).map_err(|e| {
            aimon::Error::new(aimon::ErrorKind::Unavailable, format!("listener: {e}"))
        })?;
        let (closing, closing_seen) = tokio::sync::watch::channel(false);
        let telemetry = Arc::new(Telemetry::new());
        let (ingest, flusher) = Ingest::start(
            Arc::clone(&manager),
            config.limits.queue_samples,
            config.limits.batch_samples,
            ingest_writers(&manager, &config.limits),
            Arc::clone(&telemetry),
        );
        let app = App(Arc::new(Shared {
            tokens: Tokens::new(&config.tokens),
            manager,
            ingest,
            telemetry,
            limits: config.limits.clone(),
            closing: closing_seen,
            prometheus_metadata: Default::default(),
        }));
        Ok(Server {
            config,
            app,
            flusher,
            listener,
            closing,
        })
    }

    /// The address it listens on (with the port the system chose for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().unwrap_or(self.config.listen)
    }

    /// Serves until `shutdown` completes, then stops accepting, ends the event streams (with
    /// a final `shutdown` event), lets every request in flight finish (up to `grace`) and
    /// stores everything queued before it returns.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
        grace: Duration,
    ) -> aimon::Result<()> {
        let Server {
            config,
            app,
            flusher,
            listener,
            closing,
        } = self;
        let router = router(app, &config);
        let handle = axum_server::Handle::new();
        let stopper = handle.clone();
        tokio::spawn(async move {
            shutdown.await;
            let _ = closing.send(true);
            stopper.graceful_shutdown(Some(grace));
        });
        let io = |e: std::io::Error| {
            aimon::Error::new(aimon::ErrorKind::Unavailable, format!("server: {e}"))
        };
        let service = router.into_make_service();
        match &config.tls {
            None => {
                let mut server = axum_server::from_tcp(listener).handle(handle);
                limit_headers(server.http_builder(), config.limits.header_timeout);
                server.serve(service).await.map_err(io)?;
            }
            Some(tls) => {
                let rustls = crate::tls::server_config(tls)?;
                let mut server = axum_server::from_tcp_rustls(
                    listener,
                    axum_server::tls_rustls::RustlsConfig::from_config(rustls),
                )
                .handle(handle);
                limit_headers(server.http_builder(), config.limits.header_timeout);
                server.serve(service).await.map_err(io)?;
            }
        }
        // Every handler is done and the router dropped: the queue drains and stops.
        flusher.finish().await;
        Ok(())
    }
}
