//! `collector.v1.Query`: validates a `CdrQuery` into a [`CdrFilter`] before any work is
//! spawned, then streams the matching CDRs newest first (`ListCdrs`), or the calls with a
//! matching leg, each with all its legs, grouped by [`crate::callview::group`]
//! (`ListCalls`). Every read is written to the audit log (who, which pseudonyms, which
//! other filters and which view, how many CDRs) before the answer is sent: a read that
//! cannot be audited is refused.
use std::{pin::Pin, sync::Arc};

use collector_proto::v1::{
    query_server::Query, Call, Cdr, CdrQuery, Disposition, UsageReport, UsageReportRequest,
};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use super::{
    auth::Caller,
    retention::now_ms,
    store::{
        billing, AuditAction, AuditEntry, CdrFilter, Store, DEFAULT_QUERY_LIMIT, MAX_QUERY_LIMIT,
    },
    ServerError,
};

/// Longest pseudonym or agent id accepted in a filter, in bytes.
const MAX_FILTER_LEN: usize = 256;
/// Most pseudonyms one query may name.
pub const MAX_QUERY_PSEUDONYMS: usize = 1_000;

/// The Query service.
pub struct QueryService {
    store: Arc<dyn Store>,
}

impl QueryService {
    /// Serves queries over `store`.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }
}

fn text_filter(v: String, what: &str) -> Result<Option<String>, ServerError> {
    if v.len() > MAX_FILTER_LEN {
        return Err(ServerError::Invalid(format!(
            "{what} longer than {MAX_FILTER_LEN} bytes"
        )));
    }
    Ok((!v.is_empty()).then_some(v))
}

/// Turns a request into a filter, rejecting what cannot be right.
pub fn validate(q: CdrQuery) -> Result<CdrFilter, ServerError> {
    let disposition = match Disposition::try_from(q.disposition) {
        Ok(Disposition::Unspecified) => None,
        Ok(d) => Some(d),
        Err(_) => {
            return Err(ServerError::Invalid(format!(
                "unknown disposition {}",
                q.disposition
            )))
        }
    };
    if q.start_to_ms != 0 && q.start_to_ms <= q.start_from_ms {
        return Err(ServerError::Invalid(
            "start_to_ms must be after start_from_ms".into(),
        ));
    }
    if let Some(v) = q.min_loss_pct.filter(|v| !(0.0..=100.0).contains(v)) {
        return Err(ServerError::Invalid(format!(
            "min_loss_pct {v} is outside 0..=100"
        )));
    }
    if let Some(v) = q.max_mos.filter(|v| !(1.0..=5.0).contains(v)) {
        return Err(ServerError::Invalid(format!(
            "max_mos {v} is outside 1..=5"
        )));
    }
    if q.pseudonyms.len() > MAX_QUERY_PSEUDONYMS {
        return Err(ServerError::Invalid(format!(
            "at most {MAX_QUERY_PSEUDONYMS} pseudonyms per query"
        )));
    }
    let mut pseudonyms = Vec::with_capacity(q.pseudonyms.len() + 1);
    for p in q.pseudonyms.into_iter().chain(std::iter::once(q.pseudonym)) {
        if let Some(p) = text_filter(p, "pseudonym")? {
            if !pseudonyms.contains(&p) {
                pseudonyms.push(p);
            }
        }
    }
    Ok(CdrFilter {
        start_from_ms: (q.start_from_ms != 0).then_some(q.start_from_ms),
        start_to_ms: (q.start_to_ms != 0).then_some(q.start_to_ms),
        pseudonyms,
        disposition,
        agent_id: text_filter(q.agent_id, "agent_id")?,
        cdr_id: None,
        min_loss_pct: q.min_loss_pct,
        max_mos: q.max_mos,
        limit: match q.limit {
            0 => DEFAULT_QUERY_LIMIT,
            n => n.min(MAX_QUERY_LIMIT),
        },
        tenant: None,
    })
}

/// Validates a usage request: the range must be non-empty. A report holds counts and sums
/// per destination only, no identifier, so it is not written to the audit log.
pub fn validate_usage(q: &UsageReportRequest) -> Result<(), ServerError> {
    if q.to_ms <= q.from_ms {
        return Err(ServerError::Invalid("to_ms must be after from_ms".into()));
    }
    Ok(())
}

/// The usage report of `q`'s range for `caller`'s tenant (a provider names one, else the
/// default tenant): the gRPC `Usage` call and the web console's usage page.
pub async fn usage(
    store: &dyn Store,
    caller: &Caller,
    q: &UsageReportRequest,
) -> Result<UsageReport, Status> {
    let tenant = caller.one_tenant(&q.tenant)?;
    validate_usage(q)?;
    let groups = store
        .usage(&tenant, q.from_ms, q.to_ms)
        .await
        .map_err(ServerError::from)?;
    Ok(billing::usage_report(&groups))
}

/// Which view a read asked for (recorded in the audit log).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    /// `ListCdrs`: one row per leg.
    Cdrs,
    /// `ListCalls`: one row per call, with all its legs.
    Calls,
}

/// The non-pseudonym filters of a query as a JSON object, for the audit log. A
/// [`View::Calls`] read says so (`"view": "calls"`): it returns sibling legs the filters
/// alone would not have matched.
pub fn describe(f: &CdrFilter, view: View) -> String {
    let mut m = serde_json::Map::new();
    if view == View::Calls {
        m.insert("view".to_string(), "calls".into());
    }
    let mut put = |k: &str, v: serde_json::Value| {
        m.insert(k.to_string(), v);
    };
    if let Some(v) = f.start_from_ms {
        put("start_from_ms", v.into());
    }
    if let Some(v) = f.start_to_ms {
        put("start_to_ms", v.into());
    }
    if let Some(d) = f.disposition {
        put("disposition", d.as_str_name().into());
    }
    if let Some(a) = &f.agent_id {
        put("agent_id", a.clone().into());
    }
    if let Some(id) = &f.cdr_id {
        put("cdr_id", id.clone().into());
    }
    if let Some(v) = f.min_loss_pct {
        put("min_loss_pct", v.into());
    }
    if let Some(v) = f.max_mos {
        put("max_mos", v.into());
    }
    put("limit", f.limit.into());
    serde_json::Value::Object(m).to_string()
}

/// Validates `q`, confines it to `caller`'s tenant, reads the legs of `view`, and audits
/// the read (the CDRs returned, legs of every call included) before anything is answered:
/// the one read path of the gRPC `Query` service and the web console.
pub async fn read(
    store: &dyn Store,
    caller: &Caller,
    q: CdrQuery,
    view: View,
) -> Result<Vec<Cdr>, Status> {
    let tenant = caller.scope(&q.tenant)?;
    let filter = validate(q)?;
    read_confined(store, caller, tenant, filter, view).await
}

/// The legs of the call holding the CDR `cdr_id`, confined to `caller`'s tenant and audited
/// as [`read`] does (the web console's call page): another tenant's id finds nothing. The
/// call view returns every call with a leg of that id (ids are chosen by agents, so two
/// agents of one tenant could share one), at most `limit`.
pub async fn read_call(
    store: &dyn Store,
    caller: &Caller,
    cdr_id: &str,
    limit: u32,
) -> Result<Vec<Cdr>, Status> {
    let tenant = caller.scope("")?;
    let cdr_id = text_filter(cdr_id.to_owned(), "cdr_id")?
        .ok_or_else(|| ServerError::Invalid("the cdr id is empty".into()))?;
    let filter = CdrFilter {
        cdr_id: Some(cdr_id),
        limit: limit.clamp(1, MAX_QUERY_LIMIT),
        ..Default::default()
    };
    read_confined(store, caller, tenant, filter, View::Calls).await
}

/// [`read`] of a validated filter, confined to `tenant` (the caller's scope).
async fn read_confined(
    store: &dyn Store,
    caller: &Caller,
    tenant: Option<String>,
    mut filter: CdrFilter,
    view: View,
) -> Result<Vec<Cdr>, Status> {
    filter.tenant.clone_from(&tenant);
    let subjects = filter.pseudonyms.clone();
    let reference = describe(&filter, view);
    let cdrs = match view {
        View::Cdrs => store.query(filter).await,
        View::Calls => store.query_call_legs(filter).await,
    }
    .map_err(ServerError::from)?;
    store
        .audit(AuditEntry {
            time_ms: now_ms(),
            action: AuditAction::Query,
            actor: caller.subject.clone(),
            subjects,
            reference,
            affected: cdrs.len() as u64,
            tenant,
        })
        .await
        .map_err(ServerError::from)?;
    Ok(cdrs)
}

impl QueryService {
    async fn read(&self, request: Request<CdrQuery>, view: View) -> Result<Vec<Cdr>, Status> {
        let caller = Caller::of(&request);
        read(self.store.as_ref(), &caller, request.into_inner(), view).await
    }
}

#[tonic::async_trait]
impl Query for QueryService {
    type ListCdrsStream = Pin<Box<dyn Stream<Item = Result<Cdr, Status>> + Send + 'static>>;
    type ListCallsStream = Pin<Box<dyn Stream<Item = Result<Call, Status>> + Send + 'static>>;

    async fn list_cdrs(
        &self,
        request: Request<CdrQuery>,
    ) -> Result<Response<Self::ListCdrsStream>, Status> {
        let cdrs = self.read(request, View::Cdrs).await?;
        Ok(Response::new(Box::pin(tokio_stream::iter(
            cdrs.into_iter().map(Ok),
        ))))
    }

    async fn usage(
        &self,
        request: Request<UsageReportRequest>,
    ) -> Result<Response<UsageReport>, Status> {
        let caller = Caller::of(&request);
        let report = usage(self.store.as_ref(), &caller, &request.into_inner()).await?;
        Ok(Response::new(report))
    }

    async fn list_calls(
        &self,
        request: Request<CdrQuery>,
    ) -> Result<Response<Self::ListCallsStream>, Status> {
        let legs = self.read(request, View::Calls).await?;
        let calls = crate::callview::group(legs, crate::callview::Order::NewestFirst);
        Ok(Response::new(Box::pin(tokio_stream::iter(
            calls.into_iter().map(Ok),
        ))))
    }
}
