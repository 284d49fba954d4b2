//! `collector.v1.Admin`: erasure of a subject's CDRs (GDPR Art. 17) with an audit entry
//! naming the pseudonyms and the caller, the retention job's status, and storage
//! statistics.
use std::{
    sync::Arc,
    time::{SystemTime, UNIX_EPOCH},
};

use collector_proto::v1::{
    admin_server::Admin, AgentStats, DeleteTenantRequest, DeleteTenantResponse, EraseRequest,
    EraseResponse, ImportRatesRequest, ImportRatesResponse, RerateRequest, RerateResponse,
    RetentionStatusRequest, RetentionStatusResponse, RotateKeyRequest, RotateKeyResponse,
    StatsRequest, StatsResponse, TenantSummary, TenantsRequest, TenantsResponse,
};
use tonic::{Request, Response, Status};

use super::{
    auth::Caller,
    retention::RetentionPolicy,
    store::{billing, AuditAction, AuditEntry, Erasure, Store},
    ServerError,
};

/// Most pseudonyms one erase request may name (one per key in the retention window).
pub const MAX_ERASE_PSEUDONYMS: usize = 1_000;
/// Longest pseudonym or reference accepted, in bytes.
const MAX_LEN: usize = 256;

/// The Admin service.
pub struct AdminService {
    store: Arc<dyn Store>,
    retention: RetentionPolicy,
}

impl AdminService {
    /// Serves administration of `store`, whose retention job runs `retention`.
    pub fn new(store: Arc<dyn Store>, retention: RetentionPolicy) -> Self {
        Self { store, retention }
    }
}

fn validate(req: &EraseRequest) -> Result<(), ServerError> {
    if req.pseudonyms.is_empty() || req.pseudonyms.len() > MAX_ERASE_PSEUDONYMS {
        return Err(ServerError::Invalid(format!(
            "name 1..={MAX_ERASE_PSEUDONYMS} pseudonyms"
        )));
    }
    if req
        .pseudonyms
        .iter()
        .any(|p| p.is_empty() || p.len() > MAX_LEN)
    {
        return Err(ServerError::Invalid(format!(
            "each pseudonym must be 1..={MAX_LEN} bytes"
        )));
    }
    if req.reference.len() > MAX_LEN {
        return Err(ServerError::Invalid(format!(
            "reference longer than {MAX_LEN} bytes"
        )));
    }
    Ok(())
}

/// Largest rate-table CSV accepted, in bytes (well under the gRPC message limit).
pub const MAX_RATES_BYTES: usize = 32 << 20;

/// Validates an import: the size, and the table itself (errors name the line). Returns the
/// parsed table.
pub fn validate_import(req: &ImportRatesRequest) -> Result<crate::billing::RateTable, ServerError> {
    if req.csv.len() > MAX_RATES_BYTES {
        return Err(ServerError::Invalid(format!(
            "rate table larger than {MAX_RATES_BYTES} bytes"
        )));
    }
    let version = billing::table_version(&req.csv);
    let table = crate::billing::RateTable::parse(&version, &req.csv)
        .map_err(|e| ServerError::Invalid(format!("rate table: {e}")))?;
    Ok(table)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn erase(
        &self,
        request: Request<EraseRequest>,
    ) -> Result<Response<EraseResponse>, Status> {
        let caller = Caller::of(&request);
        let req = request.into_inner();
        validate(&req)?;
        let tenant = caller.scope(&req.tenant)?;
        let count = req.pseudonyms.len();
        let deleted = self
            .store
            .erase(Erasure {
                pseudonyms: req.pseudonyms,
                reference: req.reference,
                actor: caller.subject,
                now_ms: now_ms(),
                tenant,
                audited: None,
            })
            .await
            .map_err(ServerError::from)?;
        tracing::info!(subjects = count, deleted, "erasure request executed");
        Ok(Response::new(EraseResponse { deleted }))
    }

    async fn retention_status(
        &self,
        request: Request<RetentionStatusRequest>,
    ) -> Result<Response<RetentionStatusResponse>, Status> {
        let retention_days = Caller::of(&request)
            .tenant
            .map_or(self.retention.days, |t| self.retention.days_of(&t));
        let state = self
            .store
            .retention_state()
            .await
            .map_err(ServerError::from)?;
        let last = state.last_run;
        Ok(Response::new(RetentionStatusResponse {
            retention_days,
            oldest_start_time_ms: state.oldest_start_time_ms.unwrap_or(0),
            last_run_ms: last.map_or(0, |r| r.time_ms),
            last_run_deleted: last.map_or(0, |r| r.deleted),
        }))
    }

    async fn import_rates(
        &self,
        request: Request<ImportRatesRequest>,
    ) -> Result<Response<ImportRatesResponse>, Status> {
        let tenant = Caller::of(&request).one_tenant(&request.get_ref().tenant)?;
        let req = request.into_inner();
        let table = validate_import(&req)?;
        let new_version = self
            .store
            .store_rates(&tenant, table.version(), &req.csv, now_ms())
            .await
            .map_err(ServerError::from)?;
        tracing::info!(
            tenant,
            version = table.version(),
            rows = table.len(),
            new_version,
            "rate table imported"
        );
        Ok(Response::new(ImportRatesResponse {
            version: table.version().to_owned(),
            rows: table.len() as u64,
            new_version,
        }))
    }

    async fn rerate(
        &self,
        request: Request<RerateRequest>,
    ) -> Result<Response<RerateResponse>, Status> {
        let caller = Caller::of(&request);
        let req = request.into_inner();
        let tenant = caller.one_tenant(&req.tenant)?;
        let since_ms = req.since_ms;
        let out = self
            .store
            .rerate(
                &tenant,
                since_ms,
                AuditEntry {
                    time_ms: now_ms(),
                    action: AuditAction::Rerate,
                    actor: caller.subject,
                    subjects: Vec::new(),
                    reference: format!("tenant={tenant} since_ms={since_ms}"),
                    affected: 0,
                    tenant: Some(tenant.clone()),
                },
            )
            .await
            .map_err(ServerError::from)?;
        tracing::info!(
            tenant,
            since_ms,
            version = out.version.as_deref().unwrap_or(""),
            cdrs = out.cdrs,
            changed = out.changed,
            unrated = out.unrated,
            "cdrs re-rated"
        );
        Ok(Response::new(RerateResponse {
            version: out.version.unwrap_or_default(),
            cdrs: out.cdrs,
            changed: out.changed,
            unrated: out.unrated,
        }))
    }

    async fn stats(
        &self,
        request: Request<StatsRequest>,
    ) -> Result<Response<StatsResponse>, Status> {
        let tenant = Caller::of(&request).scope(&request.get_ref().tenant)?;
        let s = self
            .store
            .stats(tenant.as_deref())
            .await
            .map_err(ServerError::from)?;
        Ok(Response::new(StatsResponse {
            cdrs_stored: s.cdrs_stored,
            agents: s
                .agents
                .into_iter()
                .map(|a| AgentStats {
                    agent_id: a.agent_id,
                    highest_sequence: a.highest_sequence,
                })
                .collect(),
        }))
    }

    async fn delete_tenant(
        &self,
        request: Request<DeleteTenantRequest>,
    ) -> Result<Response<DeleteTenantResponse>, Status> {
        let caller = Caller::of(&request);
        let req = request.into_inner();
        let Some(tenant) = caller.scope(&req.tenant)? else {
            return Err(ServerError::Invalid("name the tenant to delete".into()).into());
        };
        if req.reference.len() > MAX_LEN {
            return Err(
                ServerError::Invalid(format!("reference longer than {MAX_LEN} bytes")).into(),
            );
        }
        let deleted = self
            .store
            .delete_tenant(
                &tenant,
                AuditEntry {
                    time_ms: now_ms(),
                    action: AuditAction::TenantDelete,
                    actor: caller.subject,
                    subjects: Vec::new(),
                    reference: req.reference,
                    affected: 0,
                    tenant: Some(tenant.clone()),
                },
            )
            .await
            .map_err(ServerError::from)?;
        tracing::info!(tenant, deleted, "tenant deleted (keys destroyed)");
        Ok(Response::new(DeleteTenantResponse { deleted }))
    }

    async fn rotate_key(
        &self,
        request: Request<RotateKeyRequest>,
    ) -> Result<Response<RotateKeyResponse>, Status> {
        let caller = Caller::of(&request);
        let tenant = caller.one_tenant(&request.get_ref().tenant)?;
        let reseal = request.get_ref().reseal;
        let key_id = self
            .store
            .rotate_key(&tenant)
            .await
            .map_err(ServerError::from)?;
        let resealed = if reseal {
            self.store
                .reseal(&tenant)
                .await
                .map_err(ServerError::from)?
        } else {
            0
        };
        self.store
            .audit(AuditEntry {
                time_ms: now_ms(),
                action: AuditAction::KeyRotate,
                actor: caller.subject,
                subjects: Vec::new(),
                reference: format!("key {key_id:x}"),
                affected: resealed,
                tenant: Some(tenant.clone()),
            })
            .await
            .map_err(ServerError::from)?;
        tracing::info!(tenant, key_id, resealed, "data key rotated");
        Ok(Response::new(RotateKeyResponse { key_id, resealed }))
    }

    async fn tenants(
        &self,
        _request: Request<TenantsRequest>,
    ) -> Result<Response<TenantsResponse>, Status> {
        let tenants = self.store.tenants().await.map_err(ServerError::from)?;
        Ok(Response::new(TenantsResponse {
            tenants: tenants
                .into_iter()
                .map(|t| TenantSummary {
                    retention_days: self.retention.days_of(&t.tenant),
                    tenant: t.tenant,
                    cdrs_stored: t.cdrs_stored,
                    agents: t.agents,
                })
                .collect(),
        }))
    }
}
