//! The xDS services: ADS (ECDS + SDS on one stream), standalone ECDS and standalone SDS, all
//! served from the same [`Store`]. The protocol logic is in [`conn`]; this module only moves
//! messages between tonic streams, the snapshot channel and the state machine.

pub mod conn;

use crate::node::{self, TokenAuth, TOKEN_HEADER};
use crate::ops::Metrics;
use crate::registry::Registry;
use crate::snapshot::{Store, ECDS_TYPE, SECRET_TYPE};
use conn::{Conn, Event, Refuse};
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::AggregatedDiscoveryService;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::envoy::service::extension::v3::extension_config_discovery_service_server::ExtensionConfigDiscoveryService;
use envoy_types::pb::envoy::service::secret::v3::secret_discovery_service_server::SecretDiscoveryService;
use std::sync::Arc;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

/// Shared by all streams.
pub struct XdsState {
    pub store: Arc<Store>,
    pub registry: watch::Receiver<Arc<Registry>>,
    pub auth: TokenAuth,
    /// `--source kubernetes`: secrets need the pod's projected ServiceAccount token, verified
    /// with the API server (the HMAC tokens of `auth` are not accepted then).
    pub reviewer: Option<Arc<crate::source::kube::tokenreview::TokenReviewer>>,
    pub metrics: Arc<Metrics>,
    pub shutdown: watch::Receiver<bool>,
    /// Open streams per node, for `peerguard_xds_connected_nodes`.
    pub connected:
        std::sync::Mutex<std::collections::BTreeMap<crate::registry::WorkloadKey, usize>>,
}

#[derive(Clone)]
pub struct Xds(pub Arc<XdsState>);

type RespStream = ReceiverStream<Result<DiscoveryResponse, Status>>;
type DeltaStream = ReceiverStream<Result<DeltaDiscoveryResponse, Status>>;

fn short_type(t: &str) -> &'static str {
    match t {
        ECDS_TYPE => "ecds",
        SECRET_TYPE => "sds",
        _ => "other",
    }
}

struct StreamGuard {
    state: Arc<XdsState>,
    key: crate::registry::WorkloadKey,
    service: &'static str,
}

impl StreamGuard {
    fn new(state: Arc<XdsState>, key: crate::registry::WorkloadKey, service: &'static str) -> Self {
        state
            .metrics
            .add("peerguard_xds_streams", &[("service", service)], 1.0);
        if let Ok(mut c) = state.connected.lock() {
            *c.entry(key.clone()).or_default() += 1;
            state
                .metrics
                .set("peerguard_xds_connected_nodes", &[], c.len() as f64);
        }
        StreamGuard {
            state,
            key,
            service,
        }
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.state
            .metrics
            .add("peerguard_xds_streams", &[("service", self.service)], -1.0);
        if let Ok(mut c) = self.state.connected.lock() {
            if let Some(n) = c.get_mut(&self.key) {
                *n -= 1;
                if *n == 0 {
                    c.remove(&self.key);
                }
            }
            self.state
                .metrics
                .set("peerguard_xds_connected_nodes", &[], c.len() as f64);
        }
    }
}

impl Xds {
    fn open(
        &self,
        req: Request<Streaming<DiscoveryRequest>>,
        service: &'static str,
        default_type: Option<&'static str>,
        allowed: &'static [&'static str],
    ) -> Response<RespStream> {
        let token = req
            .metadata()
            .get(TOKEN_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let inbound = req.into_inner();
        let (tx, rx) = mpsc::channel(16);
        let state = self.0.clone();
        tokio::spawn(async move {
            if let Err(status) =
                run_stream(state, inbound, token, service, default_type, allowed, &tx).await
            {
                let _ = tx.send(Err(status)).await;
            }
        });
        Response::new(ReceiverStream::new(rx))
    }
}

async fn run_stream(
    state: Arc<XdsState>,
    mut inbound: Streaming<DiscoveryRequest>,
    token: Option<String>,
    service: &'static str,
    default_type: Option<&'static str>,
    allowed: &'static [&'static str],
    tx: &mpsc::Sender<Result<DiscoveryResponse, Status>>,
) -> Result<(), Status> {
    let Some(first) = inbound.message().await? else {
        return Ok(());
    };
    let (key, service_account) = {
        let registry = state.registry.borrow().clone();
        match node::resolve(first.node.as_ref(), &registry) {
            Ok(entry) => (entry.key.clone(), entry.spec.service_account.clone()),
            Err(e) => {
                tracing::warn!(service, node = ?first.node.as_ref().map(|n| &n.id), "refusing stream: {e}");
                state.metrics.inc(
                    "peerguard_xds_refused_streams_total",
                    &[("reason", "unknown_node")],
                );
                return Err(Status::not_found(e.to_string()));
            }
        }
    };
    let authenticated = match (&state.reviewer, token.as_deref()) {
        (_, None) => false,
        (None, Some(t)) => state.auth.verify(&key, t),
        // Only a stream that may carry secrets needs the API server's word.
        (Some(_), Some(_)) if !allowed.contains(&SECRET_TYPE) => false,
        (Some(reviewer), Some(t)) => match reviewer
            .review(t)
            .await
            .and_then(|id| id.authorizes(&key, &service_account))
        {
            Ok(()) => true,
            Err(why) => {
                // Counted with the refusal below (`reason="unauthenticated"`).
                tracing::warn!(node = %key, service, "service account token refused: {why}");
                false
            }
        },
    };
    let Some(mut snaps) = state.store.subscribe(&key) else {
        return Err(Status::unavailable(format!(
            "no configuration compiled yet for node {key}; retry"
        )));
    };
    let _guard = StreamGuard::new(state.clone(), key.clone(), service);
    let span = tracing::info_span!("xds", node = %key, service);
    let _enter = span.enter();
    tracing::info!(authenticated, "stream opened");
    drop(_enter);
    let mut conn = Conn::new(key.clone(), authenticated, default_type, allowed);
    let mut shutdown = state.shutdown.clone();
    let mut next = Some(first);
    loop {
        if let Some(req) = next.take() {
            let snap = snaps.borrow_and_update().clone();
            let out = conn
                .on_request(&req, &snap)
                .map_err(|r| refuse(&state, &key, r))?;
            deliver(&state, &key, out, tx).await?;
            continue;
        }
        tokio::select! {
            msg = inbound.message() => match msg {
                Ok(Some(req)) => next = Some(req),
                Ok(None) => { tracing::info!(node = %key, service, "stream closed by client"); return Ok(()); }
                Err(e) => { tracing::info!(node = %key, service, "stream ended: {e}"); return Ok(()); }
            },
            changed = snaps.changed() => {
                if changed.is_err() {
                    tracing::warn!(node = %key, "workload removed from the registry; closing stream");
                    return Err(Status::not_found(format!("node {key} is no longer in the registry")));
                }
                let snap = snaps.borrow_and_update().clone();
                let out = conn.on_snapshot(&snap);
                deliver(&state, &key, out, tx).await?;
            }
            _ = shutdown.changed() => return Err(Status::unavailable("server shutting down")),
        }
    }
}

fn refuse(state: &XdsState, key: &crate::registry::WorkloadKey, r: Refuse) -> Status {
    tracing::warn!(node = %key, "refusing: {r}");
    match r {
        Refuse::Unauthenticated(_) => {
            state.metrics.inc(
                "peerguard_xds_refused_streams_total",
                &[("reason", "unauthenticated")],
            );
            Status::unauthenticated(r.to_string())
        }
        Refuse::UnsupportedType(_) => {
            state.metrics.inc(
                "peerguard_xds_refused_streams_total",
                &[("reason", "unsupported_type")],
            );
            Status::invalid_argument(r.to_string())
        }
    }
}

async fn deliver(
    state: &XdsState,
    key: &crate::registry::WorkloadKey,
    out: conn::Outcome,
    tx: &mpsc::Sender<Result<DiscoveryResponse, Status>>,
) -> Result<(), Status> {
    for ev in &out.events {
        match ev {
            Event::Ack { type_url, version } => {
                state.metrics.inc(
                    "peerguard_xds_acks_total",
                    &[("type", short_type(type_url))],
                );
                tracing::debug!(node = %key, r#type = short_type(type_url), version, "ACK");
            }
            Event::Nack {
                type_url,
                rejected_version,
                kept_version,
                detail,
            } => {
                state.metrics.inc(
                    "peerguard_xds_rejects_total",
                    &[("type", short_type(type_url))],
                );
                tracing::warn!(node = %key, r#type = short_type(type_url), rejected_version, kept_version, error_detail = %detail, "NACK: Envoy rejected the configuration and keeps its last accepted one");
            }
            Event::Stale { type_url, nonce } => {
                tracing::debug!(node = %key, r#type = short_type(type_url), nonce, "stale request ignored");
            }
            Event::Push {
                type_url,
                version,
                names,
            } => {
                state.metrics.inc(
                    "peerguard_xds_pushes_total",
                    &[("type", short_type(type_url))],
                );
                tracing::info!(node = %key, r#type = short_type(type_url), version, ?names, "push");
            }
        }
    }
    for r in out.responses {
        if tx.send(Ok(r)).await.is_err() {
            return Err(Status::cancelled("client went away"));
        }
    }
    Ok(())
}

#[tonic::async_trait]
impl AggregatedDiscoveryService for Xds {
    type StreamAggregatedResourcesStream = RespStream;
    type DeltaAggregatedResourcesStream = DeltaStream;

    async fn stream_aggregated_resources(
        &self,
        req: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<RespStream>, Status> {
        Ok(self.open(req, "ads", None, conn::ADS_TYPES))
    }

    async fn delta_aggregated_resources(
        &self,
        _req: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<DeltaStream>, Status> {
        Err(Status::unimplemented(
            "delta xDS is not implemented; use the state-of-the-world protocol (api_type: GRPC)",
        ))
    }
}

#[tonic::async_trait]
impl ExtensionConfigDiscoveryService for Xds {
    type StreamExtensionConfigsStream = RespStream;
    type DeltaExtensionConfigsStream = DeltaStream;

    async fn stream_extension_configs(
        &self,
        req: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<RespStream>, Status> {
        Ok(self.open(req, "ecds", Some(ECDS_TYPE), conn::ECDS_ONLY))
    }

    async fn delta_extension_configs(
        &self,
        _req: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<DeltaStream>, Status> {
        Err(Status::unimplemented(
            "delta xDS is not implemented; use api_type: GRPC",
        ))
    }

    async fn fetch_extension_configs(
        &self,
        _req: Request<DiscoveryRequest>,
    ) -> Result<Response<DiscoveryResponse>, Status> {
        Err(Status::unimplemented(
            "REST fetch is not implemented; use the gRPC stream",
        ))
    }
}

#[tonic::async_trait]
impl SecretDiscoveryService for Xds {
    type DeltaSecretsStream = DeltaStream;
    type StreamSecretsStream = RespStream;

    async fn delta_secrets(
        &self,
        _req: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<DeltaStream>, Status> {
        Err(Status::unimplemented(
            "delta xDS is not implemented; use api_type: GRPC",
        ))
    }

    async fn stream_secrets(
        &self,
        req: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<RespStream>, Status> {
        Ok(self.open(req, "sds", Some(SECRET_TYPE), conn::SDS_ONLY))
    }

    async fn fetch_secrets(
        &self,
        _req: Request<DiscoveryRequest>,
    ) -> Result<Response<DiscoveryResponse>, Status> {
        Err(Status::unimplemented(
            "REST fetch is not implemented; use the gRPC stream",
        ))
    }
}
