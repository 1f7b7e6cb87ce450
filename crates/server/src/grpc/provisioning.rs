//! `tenant.v1.ProvisioningService`: the tenant's provisioning run, a live watch of it, and
//! cancel / retry.

use std::pin::Pin;

use futures::Stream;
use prometheus::IntGauge;
use tenantd_application::{Operation, ProvisioningService};
use tenantd_domain::TenantId;
use tenantd_domain::provisioning::ProvisioningRun;
use tokio::sync::{broadcast, mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::status::to_status;
use crate::proto::{self, provisioning_service_server};

/// Messages a watcher may have queued before the server waits for the client to read:
/// a slow reader holds up only its own watch, which then sends the latest state.
const WATCH_BUFFER: usize = 4;

/// The ProvisioningService handlers.
#[derive(Debug, Clone)]
pub struct ProvisioningApi {
    service: ProvisioningService,
    stopping: watch::Receiver<bool>,
    open_watches: IntGauge,
}

impl ProvisioningApi {
    /// Handlers over `service`; open watches end when `stopping` turns true (shutdown) and
    /// are counted in `open_watches`.
    pub fn new(
        service: ProvisioningService,
        stopping: watch::Receiver<bool>,
        open_watches: IntGauge,
    ) -> Self {
        Self {
            service,
            stopping,
            open_watches,
        }
    }
}

/// Counts a watch as open for as long as it lives.
struct OpenWatch(IntGauge);

impl OpenWatch {
    fn new(gauge: IntGauge) -> Self {
        gauge.inc();
        Self(gauge)
    }
}

impl Drop for OpenWatch {
    fn drop(&mut self) {
        self.0.dec();
    }
}

fn message(run: &ProvisioningRun) -> proto::WatchProvisioningResponse {
    proto::WatchProvisioningResponse {
        run: Some(proto::ProvisioningRun::from(run)),
    }
}

/// Follows `tenant`'s run after `first` was sent: on each local change signal of this
/// tenant, and every poll interval for changes other replicas make, it re-reads the run
/// and sends it if it changed; it stops after a settled run, when the client goes away, on
/// shutdown (UNAVAILABLE: watch again elsewhere) or on a store error (as the status).
async fn follow(
    service: ProvisioningService,
    tenant: TenantId,
    mut changes: broadcast::Receiver<TenantId>,
    mut last: ProvisioningRun,
    tx: mpsc::Sender<Result<proto::WatchProvisioningResponse, Status>>,
    mut stopping: watch::Receiver<bool>,
    _open: OpenWatch,
) {
    // One ticker for the whole watch: signals about other tenants must not postpone it.
    let mut poll = tokio::time::interval(service.watch_poll_interval());
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    poll.tick().await;
    loop {
        tokio::select! {
            () = tx.closed() => return,
            flipped = stopping.changed() => {
                let stop = flipped.is_err() || *stopping.borrow();
                if stop {
                    let _gone = tx
                        .send(Err(Status::unavailable("tenantd is shutting down; watch again")))
                        .await;
                    return;
                }
                continue;
            }
            signal = changes.recv() => match signal {
                Ok(other) if other != tenant => continue,
                // Lagged: some signal may have been ours; read to find out.
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return,
            },
            _ = poll.tick() => {}
        }
        match service.get(&tenant.to_string()).await {
            Ok(run) if run.id == last.id && run.version == last.version => {}
            Ok(run) => {
                let done = run.is_settled();
                if tx.send(Ok(message(&run))).await.is_err() {
                    return;
                }
                if done {
                    return;
                }
                last = run;
            }
            Err(err) => {
                let _gone = tx.send(Err(to_status(err))).await;
                return;
            }
        }
    }
}

#[tonic::async_trait]
impl provisioning_service_server::ProvisioningService for ProvisioningApi {
    type WatchProvisioningStream =
        Pin<Box<dyn Stream<Item = Result<proto::WatchProvisioningResponse, Status>> + Send>>;

    async fn get_provisioning(
        &self,
        request: Request<proto::GetProvisioningRequest>,
    ) -> Result<Response<proto::GetProvisioningResponse>, Status> {
        super::allow(
            &request,
            Operation::GetProvisioning,
            Some(&request.get_ref().tenant_id),
        )?;
        let run = self
            .service
            .get(&request.get_ref().tenant_id)
            .await
            .map_err(to_status)?;
        Ok(Response::new(proto::GetProvisioningResponse {
            run: Some(proto::ProvisioningRun::from(&run)),
        }))
    }

    async fn watch_provisioning(
        &self,
        request: Request<proto::WatchProvisioningRequest>,
    ) -> Result<Response<Self::WatchProvisioningStream>, Status> {
        super::allow(
            &request,
            Operation::WatchProvisioning,
            Some(&request.get_ref().tenant_id),
        )?;
        // Subscribe before the first read, so no change between the two is missed.
        let changes = self.service.signals().subscribe();
        let first = self
            .service
            .get(&request.get_ref().tenant_id)
            .await
            .map_err(to_status)?;
        let (tx, rx) = mpsc::channel(WATCH_BUFFER);
        // The first message fits the empty buffer.
        let _fits = tx.try_send(Ok(message(&first)));
        if !first.is_settled() {
            tokio::spawn(follow(
                self.service.clone(),
                first.tenant_id,
                changes,
                first,
                tx,
                self.stopping.clone(),
                OpenWatch::new(self.open_watches.clone()),
            ));
        }
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn cancel_provisioning(
        &self,
        request: Request<proto::CancelProvisioningRequest>,
    ) -> Result<Response<proto::CancelProvisioningResponse>, Status> {
        super::allow(
            &request,
            Operation::CancelProvisioning,
            Some(&request.get_ref().tenant_id),
        )?;
        let request = request.into_inner();
        let run = self
            .service
            .cancel(&request.tenant_id, &request.reason)
            .await
            .map_err(to_status)?;
        Ok(Response::new(proto::CancelProvisioningResponse {
            run: Some(proto::ProvisioningRun::from(&run)),
        }))
    }

    async fn retry_provisioning(
        &self,
        request: Request<proto::RetryProvisioningRequest>,
    ) -> Result<Response<proto::RetryProvisioningResponse>, Status> {
        super::allow(
            &request,
            Operation::RetryProvisioning,
            Some(&request.get_ref().tenant_id),
        )?;
        let run = self
            .service
            .retry(&request.get_ref().tenant_id)
            .await
            .map_err(to_status)?;
        Ok(Response::new(proto::RetryProvisioningResponse {
            run: Some(proto::ProvisioningRun::from(&run)),
        }))
    }
}
