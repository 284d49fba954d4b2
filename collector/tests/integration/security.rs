//! Transport security and authorisation of the collector, in process on 127.0.0.1 with
//! TLS certificates made by rcgen for the test: every call needs a token of the right role
//! (UNAUTHENTICATED without a valid one, PERMISSION_DENIED with the wrong role), mutual TLS
//! refuses certificates from another CA, reads and erasures land in the audit log, and the
//! agent's shipper works through TLS, mutual TLS and a token. Run over both backends.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use crate::support;
use std::{net::SocketAddr, sync::Arc, time::Duration};

use crate::support::{Backend, Pki};
use collector::{
    rpc::connect::{AuthChannel, ClientSecurity},
    server::{
        retention::RetentionPolicy,
        store::{AuditAction, Store},
        tls::TlsFiles,
        token::{self, Role, TokenSecret},
        ServeOptions,
    },
    ship::{ShipOptions, Shipper},
    spool::{Spool, SpoolOptions, SpoolSealing},
};
use collector_proto::v1::{
    admin_client::AdminClient, flow_event, ingest_client::IngestClient, query_client::QueryClient,
    watch_client::WatchClient, Alert, Cdr, CdrQuery, CdrRecord, DeleteTenantRequest, Disposition,
    EraseRequest, FlowEvent, IngestRequest, Party, PublishRequest, RetentionStatusRequest,
    RotateKeyRequest, StatsRequest, TenantsRequest, WatchRequest,
};
use prost::Message as _;
use tokio_stream::StreamExt as _;
use tonic::{
    transport::{Certificate, ClientTlsConfig, Identity},
    Code,
};

struct Running {
    addr: SocketAddr,
    store: Arc<dyn Store>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), &mut self.task).await;
    }
}

async fn start(b: &Backend, pki: &Pki, secret: &TokenSecret, mtls: bool) -> Running {
    let store = b.open().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let tls = TlsFiles {
        cert: pki.path("server.pem"),
        key: pki.path("server.key"),
        client_ca: mtls.then(|| pki.path("ca.pem")),
        client_auth_optional: false,
    }
    .load()
    .unwrap();
    let opts = ServeOptions {
        token_secret: Some(secret.clone()),
        tls: Some(tls),
        retention: RetentionPolicy::default(),
    };
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let s = Arc::clone(&store);
    let task = tokio::spawn(async move {
        collector::server::serve(listener, s, opts, async {
            let _ = rx.await;
        })
        .await
        .unwrap();
    });
    Running {
        addr,
        store,
        stop: Some(stop),
        task,
    }
}

fn tls(pki: &Pki, ca: &str, client: Option<&str>) -> ClientTlsConfig {
    let mut c = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(std::fs::read(pki.path(ca)).unwrap()))
        .domain_name("localhost");
    if let Some(name) = client {
        c = c.identity(Identity::from_pem(
            std::fs::read(pki.path(&format!("{name}.pem"))).unwrap(),
            std::fs::read(pki.path(&format!("{name}.key"))).unwrap(),
        ));
    }
    c
}

async fn channel(
    addr: SocketAddr,
    tls: ClientTlsConfig,
    token: Option<String>,
) -> Result<AuthChannel, collector::rpc::connect::ConnectError> {
    ClientSecurity {
        tls: Some(tls),
        token,
    }
    .connect(&format!("https://{addr}"), Duration::from_secs(5))
    .await
}

fn now_s() -> u64 {
    collector::server::retention::now_ms() / 1000
}

fn tok(secret: &TokenSecret, sub: &str, role: Role) -> Option<String> {
    Some(token::issue(secret, sub, role, now_s(), 600).unwrap())
}

fn cdr(id: &str, caller: &str) -> Cdr {
    Cdr {
        cdr_id: id.into(),
        caller: Some(Party {
            user: caller.into(),
            ..Default::default()
        }),
        start_time_ms: collector::server::retention::now_ms(),
        disposition: Disposition::Answered as i32,
        ..Default::default()
    }
}

fn batch(agent: &str, cdrs: Vec<Cdr>) -> IngestRequest {
    IngestRequest {
        agent_id: agent.into(),
        batch: cdrs
            .into_iter()
            .zip(1..)
            .map(|(c, s)| CdrRecord {
                sequence: s,
                cdr: Some(c),
            })
            .collect(),
    }
}

/// Streams one batch and returns the ack, or the status the stream ended with.
async fn ingest(ch: AuthChannel, req: IngestRequest) -> Result<u64, tonic::Status> {
    let mut c = IngestClient::new(ch);
    let mut acks = c.stream(tokio_stream::iter(vec![req])).await?.into_inner();
    match acks.message().await? {
        Some(a) => Ok(a.highest_sequence),
        None => Err(tonic::Status::unknown("stream closed without an ack")),
    }
}

async fn list(ch: AuthChannel, q: CdrQuery) -> Result<Vec<String>, tonic::Status> {
    let mut c = QueryClient::new(ch);
    let mut s = c.list_cdrs(q).await?.into_inner();
    let mut ids = Vec::new();
    while let Some(c) = s.next().await {
        ids.push(c?.cdr_id);
    }
    Ok(ids)
}

async fn tokens_and_roles_are_checked_on_every_call(b: Backend) {
    let pki = Pki::new();
    let secret = TokenSecret::from_bytes(&[9; 32]);
    let srv = start(&b, &pki, &secret, false).await;
    let t = || tls(&pki, "ca.pem", None);
    let conn = |token: Option<String>| channel(srv.addr, t(), token);

    // No token at all.
    let err = list(conn(None).await.unwrap(), CdrQuery::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{}", b.name());
    let err = ingest(
        conn(None).await.unwrap(),
        batch("sbc1", vec![cdr("x", "P-a")]),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    // Signed with another secret; expired.
    let foreign = TokenSecret::from_bytes(&[8; 32]);
    let forged = tok(&foreign, "mallory", Role::Admin);
    let err = list(conn(forged).await.unwrap(), CdrQuery::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    let expired = Some(token::issue(&secret, "old", Role::Read, now_s() - 1_000, 10).unwrap());
    let err = list(conn(expired).await.unwrap(), CdrQuery::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);

    // An ingest token ingests, and may not read.
    let agent = tok(&secret, "sbc1", Role::Ingest);
    let cdrs = vec![cdr("1", "P-alice"), cdr("2", "P-bob"), cdr("3", "P-alice")];
    let ack = ingest(conn(agent.clone()).await.unwrap(), batch("sbc1", cdrs))
        .await
        .unwrap();
    assert_eq!(ack, 3);
    // ...only for the agent it was issued to: sbc1's token cannot write sbc2's CDRs.
    let err = ingest(
        conn(agent.clone()).await.unwrap(),
        batch("sbc2", vec![cdr("4", "P-mallory")]),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let err = list(conn(agent).await.unwrap(), CdrQuery::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);

    // A read token reads, and may neither ingest nor erase.
    let reader = tok(&secret, "ops-reader", Role::Read);
    let q = CdrQuery {
        pseudonyms: vec!["P-alice".into()],
        ..Default::default()
    };
    let mut ids = list(conn(reader.clone()).await.unwrap(), q).await.unwrap();
    ids.sort();
    assert_eq!(ids, ["1", "3"]);
    let err = ingest(
        conn(reader.clone()).await.unwrap(),
        batch("sbc1", vec![cdr("9", "P-x")]),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let erase = EraseRequest {
        pseudonyms: vec!["P-alice".into()],
        reference: "ticket-1".into(),
        tenant: String::new(),
    };
    let mut admin_as_reader = AdminClient::new(conn(reader.clone()).await.unwrap());
    let err = admin_as_reader.erase(erase.clone()).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let stats = admin_as_reader
        .stats(StatsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stats.cdrs_stored, 3);
    let ret = admin_as_reader
        .retention_status(RetentionStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ret.retention_days, 90);
    assert!(ret.oldest_start_time_ms > 0);

    // An admin token erases.
    let mut admin = AdminClient::new(conn(tok(&secret, "dpo", Role::Admin)).await.unwrap());
    assert_eq!(admin.erase(erase).await.unwrap().into_inner().deleted, 2);
    assert_eq!(b.cdr_ids().await, ["2"]);

    // The audit log holds the read (who, which pseudonym, how many) and the erasure.
    let log = srv.store.audit_log(10).await.unwrap();
    let erase_entry = &log[0];
    assert_eq!(
        (
            erase_entry.action,
            erase_entry.actor.as_str(),
            erase_entry.affected
        ),
        (AuditAction::Erase, "dpo", 2)
    );
    assert_eq!(erase_entry.subjects, ["P-alice"]);
    let read = log.iter().find(|e| e.action == AuditAction::Query).unwrap();
    assert_eq!(
        (read.actor.as_str(), read.affected, read.subjects.clone()),
        ("ops-reader", 2, vec!["P-alice".to_string()])
    );

    // Plaintext against the TLS listener gets nowhere.
    let plain = ClientSecurity {
        tls: None,
        token: tok(&secret, "ops-reader", Role::Read),
    };
    let refused = match plain
        .connect(&format!("http://{}", srv.addr), Duration::from_secs(5))
        .await
    {
        Err(_) => true,
        Ok(ch) => list(ch, CdrQuery::default()).await.is_err(),
    };
    assert!(refused);
    // Health needs no token.
    let ch = conn(None).await.unwrap();
    let mut h = tonic_health::pb::health_client::HealthClient::new(ch);
    h.check(tonic_health::pb::HealthCheckRequest {
        service: String::new(),
    })
    .await
    .unwrap();
    srv.stop().await;
}

/// Whether a connection attempt, followed by one ingest, was refused by TLS: at the
/// handshake, or (TLS 1.3 lets the client finish before the server checks its
/// certificate) as a transport failure of the first call, never as an answer of the
/// collector's own (which would mean the connection got through).
async fn refused(addr: SocketAddr, tls: ClientTlsConfig, token: Option<String>) -> bool {
    match channel(addr, tls, token).await {
        Err(_) => true,
        Ok(ch) => match ingest(ch, batch("intruder", vec![cdr("i", "P-i")])).await {
            Ok(_) => false,
            Err(status) => {
                assert!(
                    matches!(
                        status.code(),
                        Code::Unavailable | Code::Unknown | Code::Cancelled
                    ),
                    "not a transport failure: {status:?}"
                );
                true
            }
        },
    }
}

async fn mutual_tls_refuses_certificates_from_another_ca(b: Backend) {
    let pki = Pki::new();
    let secret = TokenSecret::from_bytes(&[9; 32]);
    let srv = start(&b, &pki, &secret, true).await;
    let ingest_token = tok(&secret, "sbc1", Role::Ingest);

    // A certificate from another CA, even with a valid token: refused by TLS.
    let other = tls(&pki, "ca.pem", Some("intruder"));
    assert!(refused(srv.addr, other, ingest_token.clone()).await);
    // No client certificate at all.
    assert!(refused(srv.addr, tls(&pki, "ca.pem", None), ingest_token.clone()).await);
    // The client does not trust the server's CA.
    let err = channel(srv.addr, tls(&pki, "other-ca.pem", Some("client")), None).await;
    let untrusted = match err {
        Err(_) => true,
        Ok(ch) => list(ch, CdrQuery::default()).await.is_err(),
    };
    assert!(untrusted);
    assert!(b.cdr_ids().await.is_empty(), "{}", b.name());

    // The agent's shipper, with its certificate and an ingest token, gets through.
    let dir = tempfile::tempdir().unwrap();
    let spool_dir = dir.path().join("spool");
    let mut spool =
        Spool::open(&spool_dir, SpoolOptions::default(), SpoolSealing::Unsealed).unwrap();
    for i in 1..=20u64 {
        spool
            .append(&cdr(&format!("s{i}"), "P-a").encode_to_vec())
            .unwrap();
    }
    let spool = Arc::new(std::sync::Mutex::new(spool));
    let security = ClientSecurity {
        tls: Some(tls(&pki, "ca.pem", Some("client"))),
        token: ingest_token,
    };
    let shipper = Shipper::new(Arc::clone(&spool), format!("https://{}", srv.addr), "sbc1")
        .with_options(ShipOptions {
            batch_records: 7,
            initial_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(100),
            ..ShipOptions::default()
        })
        .with_security(security);
    let stats = shipper.stats();
    let run = tokio::spawn(shipper.run(async {
        tokio::time::sleep(Duration::from_secs(20)).await;
    }));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while stats.acked.load(std::sync::atomic::Ordering::SeqCst) < 20 {
        assert!(tokio::time::Instant::now() < deadline, "shipping stalled");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    run.abort();
    let mut want: Vec<String> = (1..=20).map(|i| format!("s{i}")).collect();
    want.sort();
    assert_eq!(b.cdr_ids().await, want);
    srv.stop().await;
}

fn tenant_tok(secret: &TokenSecret, sub: &str, role: Role, tenant: &str) -> Option<String> {
    Some(token::issue_for(secret, sub, role, Some(tenant), now_s(), 600).unwrap())
}

fn linked(id: &str, caller: &str, correlation: &str) -> Cdr {
    Cdr {
        correlation_id: correlation.into(),
        ..cdr(id, caller)
    }
}

async fn ids(ch: AuthChannel, q: CdrQuery) -> Result<Vec<String>, tonic::Status> {
    let mut v = list(ch, q).await?;
    v.sort();
    Ok(v)
}

fn flow(call: &str, claimed_tenant: &str) -> FlowEvent {
    FlowEvent {
        time_ms: collector::server::retention::now_ms(),
        call_id: call.into(),
        tenant: claimed_tenant.into(),
        event: Some(flow_event::Event::Alert(Alert::default())),
        ..Default::default()
    }
}

/// Two customers' agents stream into one collector. Each tenant's tokens see and erase
/// exactly their own CDRs, calls, statistics and live flows, whatever the request names;
/// an agent id of one tenant cannot be taken over by another's token; the provider sees
/// every tenant and lists them. Known by construction: which CDR went in under which
/// token.
async fn each_tenant_sees_only_its_own(b: Backend) {
    let pki = Pki::new();
    let secret = TokenSecret::from_bytes(&[7; 32]);
    let srv = start(&b, &pki, &secret, false).await;
    let conn = |token: Option<String>| channel(srv.addr, tls(&pki, "ca.pem", None), token);
    let acme_agent = tenant_tok(&secret, "sbc-a", Role::Ingest, "acme");
    let globex_agent = tenant_tok(&secret, "sbc-g", Role::Ingest, "globex");
    // The same correlation id in both tenants: agents make them, so they may collide.
    let acme_cdrs = vec![cdr("a1", "P-alice"), linked("a2", "P-shared", "corr-1")];
    let globex_cdrs = vec![cdr("g1", "P-bob"), linked("g2", "P-shared", "corr-1")];
    ingest(
        conn(acme_agent.clone()).await.unwrap(),
        batch("sbc-a", acme_cdrs),
    )
    .await
    .unwrap();
    ingest(
        conn(globex_agent.clone()).await.unwrap(),
        batch("sbc-g", globex_cdrs),
    )
    .await
    .unwrap();

    let acme = tenant_tok(&secret, "ops-acme", Role::Read, "acme");
    let globex = tenant_tok(&secret, "ops-globex", Role::Read, "globex");
    let provider =
        Some(token::issue_for(&secret, "noc", Role::Provider, None, now_s(), 600).unwrap());
    let read = |token: &Option<String>, q: CdrQuery| {
        let c = conn(token.clone());
        async move { ids(c.await.unwrap(), q).await }
    };
    let all = CdrQuery::default();
    assert_eq!(
        read(&acme, all.clone()).await.unwrap(),
        ["a1", "a2"],
        "{}",
        b.name()
    );
    assert_eq!(read(&globex, all.clone()).await.unwrap(), ["g1", "g2"]);
    // Naming the other tenant's agent or pseudonym finds nothing; naming the other tenant
    // is refused.
    let other_agent = CdrQuery {
        agent_id: "sbc-g".into(),
        ..Default::default()
    };
    assert!(read(&acme, other_agent).await.unwrap().is_empty());
    let other_party = CdrQuery {
        pseudonym: "P-bob".into(),
        ..Default::default()
    };
    assert!(read(&acme, other_party).await.unwrap().is_empty());
    let other_tenant = CdrQuery {
        tenant: "globex".into(),
        ..Default::default()
    };
    let err = read(&acme, other_tenant.clone()).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    // The call view takes sibling legs from the caller's tenant only.
    let shared = CdrQuery {
        pseudonym: "P-shared".into(),
        ..Default::default()
    };
    let mut q = QueryClient::new(conn(acme.clone()).await.unwrap());
    let calls: Vec<_> = q
        .list_calls(shared.clone())
        .await
        .unwrap()
        .into_inner()
        .collect::<Result<Vec<_>, _>>()
        .await
        .unwrap();
    let legs: Vec<&str> = calls
        .iter()
        .flat_map(|c| c.legs.iter().map(|l| l.cdr_id.as_str()))
        .collect();
    assert_eq!(legs, ["a2"], "{}", b.name());
    // The provider sees every tenant, or the one it names.
    assert_eq!(
        read(&provider, all.clone()).await.unwrap(),
        ["a1", "a2", "g1", "g2"]
    );
    assert_eq!(read(&provider, other_tenant).await.unwrap(), ["g1", "g2"]);

    // An ingest token of another tenant cannot write as acme's agent.
    let hijack = tenant_tok(&secret, "sbc-a", Role::Ingest, "globex");
    let err = ingest(
        conn(hijack).await.unwrap(),
        IngestRequest {
            agent_id: "sbc-a".into(),
            batch: vec![CdrRecord {
                sequence: 9,
                cdr: Some(cdr("x9", "P-x")),
            }],
        },
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{}", b.name());

    // Erasure is confined to the admin's tenant: globex's leg with the same pseudonym stays.
    let acme_admin = tenant_tok(&secret, "dpo-acme", Role::Admin, "acme");
    let erase = EraseRequest {
        pseudonyms: vec!["P-shared".into()],
        reference: "t-1".into(),
        tenant: String::new(),
    };
    let mut admin = AdminClient::new(conn(acme_admin.clone()).await.unwrap());
    assert_eq!(admin.erase(erase).await.unwrap().into_inner().deleted, 1);
    assert_eq!(read(&globex, all.clone()).await.unwrap(), ["g1", "g2"]);
    assert_eq!(read(&acme, all.clone()).await.unwrap(), ["a1"]);
    // Statistics of the caller's tenant only; the tenant list is the provider's.
    let stats = admin
        .stats(StatsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stats.cdrs_stored, 1);
    let agents: Vec<&str> = stats.agents.iter().map(|a| a.agent_id.as_str()).collect();
    assert_eq!(agents, ["sbc-a"]);
    let err = admin.tenants(TenantsRequest {}).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let mut noc = AdminClient::new(conn(provider.clone()).await.unwrap());
    let tenants = noc
        .tenants(TenantsRequest {})
        .await
        .unwrap()
        .into_inner()
        .tenants;
    let rows: Vec<(&str, u64, u32)> = tenants
        .iter()
        .map(|t| (t.tenant.as_str(), t.cdrs_stored, t.agents))
        .collect();
    assert_eq!(rows, [("acme", 1, 1), ("globex", 2, 1)], "{}", b.name());
    // The audit log names the tenant each read and erasure was confined to.
    let log = srv.store.audit_log(100).await.unwrap();
    let erase_entry = log.iter().find(|e| e.action == AuditAction::Erase).unwrap();
    assert_eq!(erase_entry.tenant.as_deref(), Some("acme"));
    assert!(log
        .iter()
        .any(|e| e.action == AuditAction::Query && e.actor == "noc" && e.tenant.is_none()));

    // Live flows through the relay: the tenant comes from the publishing agent's token,
    // whatever the event claims; each reader sees its own tenant's events.
    for (token, agent, call, claim) in [
        (&acme_agent, "sbc-a", "call-a", "globex"),
        (&globex_agent, "sbc-g", "call-g", ""),
    ] {
        let mut w = WatchClient::new(conn(token.clone()).await.unwrap());
        let req = PublishRequest {
            agent_id: agent.into(),
            events: vec![flow(call, claim)],
        };
        assert_eq!(
            w.publish(tokio_stream::iter(vec![req]))
                .await
                .unwrap()
                .into_inner()
                .accepted,
            1
        );
    }
    let seen = |token: Option<String>| async {
        let mut w = WatchClient::new(conn(token).await.unwrap());
        let req = WatchRequest {
            last_n: 100,
            ..Default::default()
        };
        let events: Vec<FlowEvent> = w
            .flows(req)
            .await
            .unwrap()
            .into_inner()
            .collect::<Result<Vec<_>, _>>()
            .await
            .unwrap();
        let mut v: Vec<(String, String)> =
            events.into_iter().map(|e| (e.call_id, e.tenant)).collect();
        v.sort();
        v
    };
    let s = |a: &str, b: &str| (a.to_owned(), b.to_owned());
    assert_eq!(seen(acme.clone()).await, [s("call-a", "acme")]);
    assert_eq!(seen(globex.clone()).await, [s("call-g", "globex")]);
    assert_eq!(
        seen(provider.clone()).await,
        [s("call-a", "acme"), s("call-g", "globex")]
    );

    // Tenant administration: a tenant's admin may not delete its tenant, the provider may
    // (every row of that tenant, no other's); this collector runs without encryption at
    // rest, so rotating a key is a failed precondition (at_rest tests the sealed store).
    let delete = |tenant: &str| DeleteTenantRequest {
        tenant: tenant.into(),
        reference: "T-9".into(),
    };
    let err = admin.delete_tenant(delete("acme")).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let rotate = RotateKeyRequest {
        tenant: String::new(),
        reseal: true,
    };
    let err = admin.rotate_key(rotate).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{}", b.name());
    let gone = noc
        .delete_tenant(delete("acme"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(gone.deleted, 1);
    assert!(read(&acme, all.clone()).await.unwrap().is_empty());
    assert_eq!(read(&globex, all.clone()).await.unwrap(), ["g1", "g2"]);
    let tenants = noc
        .tenants(TenantsRequest {})
        .await
        .unwrap()
        .into_inner()
        .tenants;
    let names: Vec<&str> = tenants.iter().map(|t| t.tenant.as_str()).collect();
    assert_eq!(names, ["globex"], "{}", b.name());
    srv.stop().await;
}

both_backends!(
    tokens_and_roles_are_checked_on_every_call,
    mutual_tls_refuses_certificates_from_another_ca,
    each_tenant_sees_only_its_own,
);

/// TLS to PostgreSQL (the scale-out path crosses a network): with the database's CA the
/// collector connects over TLS (PostgreSQL itself reports the connections as SSL); with
/// another CA it refuses to connect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_connections_use_tls_and_verify_the_server() {
    let pki = Pki::new();
    let cluster =
        support::pg::PgCluster::start_tls(&pki.path("server.pem"), &pki.path("server.key"));
    let ca = std::fs::read(pki.path("ca.pem")).unwrap();
    let other = std::fs::read(pki.path("other-ca.pem")).unwrap();
    let wrong = collector::server::store::open_with(&cluster.tcp_url(), Some(&other)).await;
    assert!(
        wrong.is_err(),
        "a server certificate from another CA was accepted"
    );
    let s = collector::server::store::open_with(&cluster.tcp_url(), Some(&ca))
        .await
        .unwrap();
    let o = s
        .ingest("A", batch("A", vec![cdr("t1", "P-a")]).batch)
        .await
        .unwrap();
    assert_eq!(o.stored, 1);
    let direct = cluster.client().await;
    let ssl: i64 = direct
        .query_one(
            "SELECT COUNT(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
             WHERE s.ssl AND a.client_addr = '127.0.0.1'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(ssl >= 1, "no TLS connection from the collector");
    drop(s);
}
