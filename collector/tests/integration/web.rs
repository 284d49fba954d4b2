//! The web console (`collector server --web-listen`) of a real `collector server` child over
//! TLS with tokens, fed by replays of corpus captures through the real pipeline
//! (`collector replay --server`) into two tenants: acme gets `sipp_g711_basic` (3 calls)
//! and `ws_nb6-telephone` (1 call, +33 3 60 65 36 74 → 147), globex gets `sipp_cancel`
//! (3 calls). Expected counts come from the captures' tshark oracles, not from the code.
//!
//! Without a browser: no, bad, expired or wrong-role tokens get the login page and never
//! data; every response carries the security headers; a tenant sees only its own calls on
//! every page and in the CSV; the clear number is in no page and no log line. In headless
//! chromium: log in, search by number, open the call, see the chart and the oracle's
//! packet counts; screenshots go to target/web-screens/.
//!
//! Live calls: events published into the relay over `Watch.Publish` with each tenant's
//! ingest token (agent `sbc-a` of acme, `sbc-g` of globex); /live and /live/events show a
//! tenant's token its own calls only, and nothing without a valid token; in chromium a
//! call published after the page was drawn appears in its table within 10 s.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use crate::support::{
    self, collector,
    web::{Browser, Https, Reply},
    write_private, Backend, Pki, Proc,
};
use collector::{
    rpc::connect::ClientSecurity,
    server::token::{self, Role, TokenSecret},
};
use collector_proto::v1::{
    flow_event::Event, watch_client::WatchClient, CallState, CallStateKind, FlowEvent,
    MediaDirection, MediaLeg, MediaStats, Party, PublishRequest,
};
use tonic::transport::{Certificate, ClientTlsConfig};

/// The number of the `ws_nb6-telephone` call, as an operator would type it.
const TYPED_NUMBER: &str = "+33 3 60 65 36 74";
/// Clear identifiers of that call (caller number and display, Call-ID), which no page and
/// no log line may hold.
const CANARIES: [&str; 4] = [
    "33360653674",
    "0360653674",
    "+33 3 60 65 36 74",
    "1135D8701739D86",
];

fn corpus(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("../testdata/corpus/{name}"))
}

/// A capture's tshark oracle.
fn oracle(capture: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(corpus(&format!("{capture}.json"))).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Calls of the oracle of `capture`, and how many of them `user` took part in.
fn oracle_calls(capture: &str, user: &str) -> (usize, usize) {
    let o = oracle(capture);
    let calls = o["calls"].as_array().unwrap();
    let with = calls
        .iter()
        .filter(|c| c["from_user"] == user || c["to_user"] == user)
        .count();
    (calls.len(), with)
}

/// The quality table the captures' oracles make: per (hour, agent) of the calls' starts,
/// the RTP streams with packets and their worst loss %, sorted by agent.
fn oracle_quality(captures: &[(&str, &str)]) -> Vec<(String, usize, f64)> {
    let mut rows: std::collections::BTreeMap<(String, u64), (usize, f64)> = Default::default();
    for (capture, agent) in captures {
        for call in oracle(capture)["calls"].as_array().unwrap() {
            let hour = call["start"].as_f64().unwrap() as u64 / 3600;
            for dir in ["caller_to_callee", "callee_to_caller"] {
                for s in call["rtp"][dir].as_array().unwrap() {
                    if s["packets"].as_u64().unwrap() > 0 {
                        let r = rows.entry((agent.to_string(), hour)).or_default();
                        r.0 += 1;
                        r.1 = r.1.max(s["lost_pct"].as_f64().unwrap());
                    }
                }
            }
        }
    }
    rows.into_iter()
        .map(|((agent, _), (n, loss))| (agent, n, loss))
        .collect()
}

/// The rows of the /quality table as (agent, streams, loss % p95), sorted by agent.
fn quality_rows(html: &str) -> Vec<(String, usize, f64)> {
    let body = html
        .split_once("<table class=\"quality\">")
        .and_then(|(_, t)| t.split_once("<tbody>"))
        .and_then(|(_, b)| b.split_once("</tbody>"))
        .map_or("", |(b, _)| b);
    let mut rows: Vec<(String, usize, f64)> = body
        .split("<tr>")
        .filter(|r| !r.is_empty())
        .map(|r| {
            let cells: Vec<&str> = r
                .split("<td>")
                .skip(1)
                .map(|c| c.split("</td>").next().unwrap())
                .collect();
            (
                cells[1].to_string(),
                cells[2].parse().unwrap(),
                cells[6].parse().unwrap(),
            )
        })
        .collect();
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    rows
}

/// The cells of the body rows of the page's `<table class="{class}">`.
fn table_cells(html: &str, class: &str) -> Vec<Vec<String>> {
    let body = html
        .split_once(&format!("<table class=\"{class}\">"))
        .and_then(|(_, t)| t.split_once("<tbody>"))
        .and_then(|(_, b)| b.split_once("</tbody>"))
        .map_or("", |(b, _)| b);
    body.split("</tr>")
        .filter(|r| r.contains("<tr"))
        .map(|r| {
            r.split("<td>")
                .skip(1)
                .map(|c| c.split("</td>").next().unwrap().to_string())
                .collect()
        })
        .collect()
}

/// The method or status of every SIP message of `call_id` in the per-message section of
/// `capture`'s oracle text, in capture order.
fn oracle_ladder(capture: &str, call_id: &str) -> Vec<String> {
    let text = std::fs::read_to_string(corpus(&format!("{capture}.oracle.txt"))).unwrap();
    text.lines()
        .filter(|l| l.as_bytes().first().is_some_and(u8::is_ascii_digit))
        .map(|l| l.split('\t').collect::<Vec<_>>())
        .filter(|f| f.len() >= 12 && f[7] == call_id)
        .map(|f| if f[8].is_empty() { f[9] } else { f[8] }.to_owned())
        .collect()
}

/// The labels of the ladder's arrows on a call page, in order.
fn ladder_labels(html: &str) -> Vec<String> {
    html.split("<g class=\"step")
        .skip(1)
        .filter_map(|g| g.split("data-label=\"").nth(1)?.split('"').next())
        .map(str::to_owned)
        .collect()
}

/// Calls of `capture`'s oracle, answered (final 2xx) and not.
fn oracle_answered(capture: &str) -> (usize, usize) {
    let o = oracle(capture);
    let calls = o["calls"].as_array().unwrap();
    let answered = calls
        .iter()
        .filter(|c| c["final_status"].as_u64().unwrap() / 100 == 2)
        .count();
    (answered, calls.len() - answered)
}

/// The /quality range that holds every fed capture (the oldest is from 2014).
const ALL_TIME: &str = "/quality?from=2014-01-01T00%3A00%3A00Z";

fn now_s() -> u64 {
    collector::server::retention::now_ms() / 1000
}

/// An agent configuration of `tenant`'s own: its own scope and key, unlike
/// `cli::agent_config`'s, which the other tenant's agents share.
fn own_keys_config(dir: &Path, tenant: &str) -> PathBuf {
    let keys = dir.join(format!("{tenant}-keys.toml"));
    write_private(
        &keys,
        "[[key]]\nid = \"g1\"\n\
         secret = \"5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a\"\n\
         created = \"2025-01-01T00:00:00Z\"\nactive = true\n",
    );
    let config = dir.join(format!("{tenant}-agent.toml"));
    std::fs::write(
        &config,
        format!(
            "[privacy]\nscope = \"{tenant}\"\nkey_file = {:?}\n",
            keys.display().to_string()
        ),
    )
    .unwrap();
    config
}

/// A running collector with its console, fed with the two tenants' captures (globex's
/// agents pseudonymize under their own keys).
struct Console {
    dir: tempfile::TempDir,
    pki: Pki,
    secret: TokenSecret,
    web: SocketAddr,
    grpc: SocketAddr,
    config: PathBuf,
    globex_config: PathBuf,
    _server: Proc,
    // Declared last: the database outlives the server using it.
    _db: Backend,
}

impl Console {
    /// The console on SQLite, fed with the two tenants' captures.
    fn start() -> Console {
        Console::start_on(Backend::sqlite())
    }

    /// The console on `db`, fed with the two tenants' captures.
    fn start_on(db: Backend) -> Console {
        let console = Console::spawn_on(db);
        for (capture, agent, tenant) in [
            ("sipp_g711_basic.pcap", "sbc-a", "acme"),
            ("ws_nb6-telephone.pcap", "sbc-a2", "acme"),
            ("sipp_cancel.pcap", "sbc-g", "globex"),
        ] {
            console.replay(capture, agent, tenant);
        }
        console
    }

    /// The console with an empty SQLite store and relay.
    fn spawn() -> Console {
        Console::spawn_on(Backend::sqlite())
    }

    /// The console with an empty store on `db` and an empty relay.
    fn spawn_on(db: Backend) -> Console {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::new();
        let secret_hex = "07".repeat(32);
        write_private(&dir.path().join("secret"), &secret_hex);
        let secret = TokenSecret::from_bytes(&[7; 32]);
        let config = crate::cli::agent_config(dir.path());
        let globex_config = own_keys_config(dir.path(), "globex");
        let grpc: SocketAddr = ([127, 0, 0, 1], support::free_port()).into();
        let web: SocketAddr = ([127, 0, 0, 1], support::free_port()).into();
        let mut cmd = collector();
        cmd.arg("server")
            .args(["--listen", &grpc.to_string()])
            .args(["--web-listen", &web.to_string()])
            .args(["--db", &db.url()])
            .arg("--tls-cert")
            .arg(pki.path("server.pem"))
            .arg("--tls-key")
            .arg(pki.path("server.key"))
            .arg("--token-secret")
            .arg(dir.path().join("secret"))
            .arg("--privacy-config")
            .arg(&config)
            .arg("--tenant-privacy-config")
            .arg(format!("globex={}", globex_config.display()))
            .arg("--master-key")
            .arg(dir.path().join("master.key"))
            .arg("--tenant-keys")
            .arg(dir.path().join("tenant-keys"))
            // The captures are years old: keep them.
            .args(["--retention-days", "0"]);
        let server = Proc::spawn("collector server", cmd, &dir.path().join("server.log"));
        support::wait_listening(grpc, Duration::from_secs(30));
        support::wait_listening(web, Duration::from_secs(30));
        Console {
            dir,
            pki,
            secret,
            web,
            grpc,
            config,
            globex_config,
            _server: server,
            _db: db,
        }
    }

    /// `collector replay CAPTURE --server` as agent `agent` of `tenant` (globex's agents
    /// with their own keys).
    fn replay(&self, capture: &str, agent: &str, tenant: &str) {
        let config = if tenant == "globex" {
            &self.globex_config
        } else {
            &self.config
        };
        let grpc = self.grpc;
        let tok = self.dir.path().join(format!("{agent}.tok"));
        std::fs::write(&tok, self.token(agent, Role::Ingest, Some(tenant), 600)).unwrap();
        let out = collector()
            .arg("replay")
            .arg(corpus(capture))
            .arg("--config")
            .arg(config)
            .args(["--server", &format!("https://{grpc}")])
            .arg("--ca")
            .arg(self.pki.path("ca.pem"))
            .args(["--tls-domain", "localhost", "--agent-id", agent])
            .arg("--token-file")
            .arg(&tok)
            .arg("--spool-dir")
            .arg(self.dir.path().join(format!("spool-{agent}")))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Publishes `events` into the relay over `Watch.Publish` as agent `agent` of `tenant`
    /// (its ingest token), and checks the relay took them all.
    fn publish(&self, agent: &str, tenant: &str, events: Vec<FlowEvent>) {
        let n = events.len() as u64;
        let security = ClientSecurity {
            tls: Some(
                ClientTlsConfig::new()
                    .ca_certificate(Certificate::from_pem(
                        std::fs::read(self.pki.path("ca.pem")).unwrap(),
                    ))
                    .domain_name("localhost"),
            ),
            token: Some(self.token(agent, Role::Ingest, Some(tenant), 600)),
        };
        let url = format!("https://{}", self.grpc);
        let req = PublishRequest {
            agent_id: agent.into(),
            events,
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let accepted = rt.block_on(async {
            let channel = security
                .connect(&url, Duration::from_secs(10))
                .await
                .unwrap();
            let mut client = WatchClient::new(channel);
            let publish = client.publish(tokio_stream::iter(vec![req]));
            tokio::time::timeout(Duration::from_secs(10), publish)
                .await
                .unwrap()
                .unwrap()
                .into_inner()
                .accepted
        });
        assert_eq!(accepted, n);
    }

    fn token(&self, sub: &str, role: Role, tenant: Option<&str>, ttl_s: u64) -> String {
        token::issue_for(&self.secret, sub, role, tenant, now_s(), ttl_s).unwrap()
    }

    fn https(&self) -> Https {
        Https::new(self.web, &self.pki.path("ca.pem"))
    }

    /// Logs in with `token`; the cookie to send.
    fn login(&self, token: &str) -> String {
        let r = self
            .https()
            .request("POST", "/login", None, Some(&format!("token={token}")));
        assert_eq!(r.status, 303, "{}", r.body);
        assert_eq!(r.header("location"), Some("/calls"));
        let cookie = r.header("set-cookie").unwrap();
        for attr in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/"] {
            assert!(cookie.contains(attr), "{cookie}");
        }
        cookie.split(';').next().unwrap().to_string()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap()
    }

    /// Fails if a clear identifier of the test call is in `text`.
    fn assert_no_canary(what: &str, text: &str) {
        for c in CANARIES {
            assert!(!text.contains(c), "{c:?} in {what}");
        }
    }
}

/// Headers every response carries.
fn assert_security_headers(path: &str, r: &Reply) {
    assert_eq!(r.header("cache-control"), Some("no-store"), "{path}");
    let csp = r.header("content-security-policy").unwrap_or("");
    for d in [
        "default-src 'none'",
        "style-src 'self'",
        "script-src 'self'",
        "connect-src 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
    ] {
        assert!(csp.contains(d), "{path}: {csp}");
    }
    // Script from this server's files only: nothing inline, nothing evaluated.
    assert!(!csp.contains("unsafe"), "{path}: {csp}");
    assert_eq!(
        r.header("x-content-type-options"),
        Some("nosniff"),
        "{path}"
    );
    assert_eq!(r.header("referrer-policy"), Some("no-referrer"), "{path}");
}

/// The rows of the results table of a /calls page.
fn result_rows(html: &str) -> Vec<&str> {
    let body = html
        .split_once("<tbody>")
        .and_then(|(_, b)| b.split_once("</tbody>"))
        .map_or("", |(b, _)| b);
    body.split("<tr>").filter(|r| !r.is_empty()).collect()
}

/// The links of a page that start with `prefix`, unescaped.
fn links(html: &str, prefix: &str) -> Vec<String> {
    html.split(&format!("href=\"{prefix}"))
        .skip(1)
        .map(|s| {
            format!(
                "{prefix}{}",
                s.split('"').next().unwrap().replace("&amp;", "&")
            )
        })
        .collect()
}

/// The call-page links of a /calls page.
fn call_links(html: &str) -> Vec<String> {
    links(html, "/calls/")
}

/// Without a valid token nothing but the login page; the headers on every response; each
/// tenant sees only its calls on /calls, /calls/{id} and the CSV; the number search finds
/// the oracle's calls; no page and no log line holds the call's clear identifiers.
#[test]
fn console_serves_only_valid_tokens_and_only_their_tenant() {
    serves_only_valid_tokens_and_only_their_tenant(Console::start());
}

/// The same pages, searches and isolation over the PostgreSQL backend.
#[test]
fn console_on_postgresql_serves_only_valid_tokens_and_only_their_tenant() {
    serves_only_valid_tokens_and_only_their_tenant(Console::start_on(Backend::postgres()));
}

fn serves_only_valid_tokens_and_only_their_tenant(c: Console) {
    let http = c.https();
    let mut pages: Vec<(String, String)> = Vec::new();

    // No cookie, a forged one, an expired token, an ingest token: the login page.
    let expired = token::issue_for(
        &c.secret,
        "ops",
        Role::Read,
        Some("acme"),
        now_s() - 3600,
        60,
    )
    .unwrap();
    let ingest = c.token("sbc-a", Role::Ingest, Some("acme"), 600);
    let cookies = [
        None,
        Some("collector_token=forged.token.value".to_string()),
        Some(format!("collector_token={expired}")),
        Some(format!("collector_token={ingest}")),
    ];
    for cookie in &cookies {
        for path in [
            "/calls",
            "/calls.csv",
            "/calls/x",
            "/quality",
            ALL_TIME,
            "/usage",
            "/inventory",
        ] {
            let r = http.get(path, cookie.as_deref());
            assert_eq!(r.status, 303, "{path} {cookie:?}");
            assert_eq!(r.header("location"), Some("/login"), "{path}");
            assert!(!r.body.contains("<table"), "{path}: {}", r.body);
            assert_security_headers(path, &r);
        }
    }
    // Logging in with them fails too, and says why.
    for (token, status) in [
        ("forged.token.value", 401),
        (expired.as_str(), 401),
        (ingest.as_str(), 403),
    ] {
        let r = http.request("POST", "/login", None, Some(&format!("token={token}")));
        assert_eq!(r.status, status, "{}", r.body);
        assert!(r.header("set-cookie").is_none());
        assert!(r.body.contains("name=\"token\""));
    }
    for path in ["/login", "/static/console.css", "/nowhere"] {
        let r = http.get(path, None);
        assert_security_headers(path, &r);
        pages.push((path.into(), r.body));
    }

    // Each tenant's token: its own calls, as many as its captures' oracles have.
    let acme = c.login(&c.token("ops-acme", Role::Read, Some("acme"), 600));
    let globex = c.login(&c.token("ops-globex", Role::Read, Some("globex"), 600));
    let acme_calls =
        oracle_calls("sipp_g711_basic.pcap", "").0 + oracle_calls("ws_nb6-telephone.pcap", "").0;
    let globex_calls = oracle_calls("sipp_cancel.pcap", "").0;
    let acme_page = http.get("/calls", Some(&acme));
    assert_eq!(acme_page.status, 200);
    assert_security_headers("/calls", &acme_page);
    assert_eq!(result_rows(&acme_page.body).len(), acme_calls);
    let globex_page = http.get("/calls", Some(&globex));
    assert_eq!(result_rows(&globex_page.body).len(), globex_calls);
    assert!(!acme_page.body.contains("cancelled"));
    // Paging: two per page walks through all of acme's calls, each once.
    let mut seen = Vec::new();
    let mut next = Some("/calls?limit=2".to_string());
    while let Some(path) = next.take() {
        let r = http.get(&path, Some(&acme));
        assert_eq!(r.status, 200, "{path}");
        seen.extend(call_links(&r.body));
        // The only `/calls?` link of a page is its next page.
        next = links(&r.body, "/calls?").pop();
        pages.push((path, r.body));
    }
    assert_eq!(seen.len(), acme_calls, "{seen:?}");

    // The CSV: a header line and the tenant's CDRs.
    let csv = http.get("/calls.csv", Some(&globex));
    assert_eq!(csv.status, 200);
    assert!(csv.header("content-type").unwrap().starts_with("text/csv"));
    assert_security_headers("/calls.csv", &csv);
    assert_eq!(csv.body.lines().count(), 1 + globex_calls, "{}", csv.body);
    // globex's calls are sipp_cancel's, all cancelled; acme's were all answered.
    assert!(
        csv.body
            .lines()
            .skip(1)
            .all(|l| l.contains(",cancelled,487,")),
        "{}",
        csv.body
    );

    // A call's page for its tenant, by the CDR id alone (no start time in the URL); 404
    // for the other one.
    let globex_call = call_links(&globex_page.body).remove(0);
    assert!(!globex_call.contains('?'), "{globex_call}");
    assert!(!globex_call.contains("at="), "{globex_call}");
    let own = http.get(&globex_call, Some(&globex));
    assert_eq!(own.status, 200, "{}", own.body);
    assert_security_headers(&globex_call, &own);
    assert!(own.body.contains("cancelled"));
    let other = http.get(&globex_call, Some(&acme));
    assert_eq!(other.status, 404);
    assert!(!other.body.contains("cancelled"));

    // The number search (POST): acme finds the oracle's calls of that number, globex none;
    // the page carries only its pseudonyms on.
    let form = format!(
        "number={}",
        TYPED_NUMBER.replace('+', "%2B").replace(' ', "+")
    );
    let (_, want) = oracle_calls("ws_nb6-telephone.pcap", "+33360653674");
    let found = http.request("POST", "/calls", Some(&acme), Some(&form));
    assert_eq!(found.status, 200);
    assert_eq!(result_rows(&found.body).len(), want);
    let csv_link = links(&found.body, "/calls.csv?").pop().unwrap();
    // The number's pseudonyms under both keys, percent-encoded.
    assert!(csv_link.contains("p=n%5Fk2%5F"), "{csv_link}");
    let csv = http.get(&csv_link, Some(&acme));
    assert_eq!(csv.body.lines().count(), 1 + want, "{}", csv.body);
    let none = http.request("POST", "/calls", Some(&globex), Some(&form));
    assert_eq!(result_rows(&none.body).len(), 0);
    // Each tenant's number search hashes under its own agents' keys: a user both tenants'
    // captures have finds each tenant's own calls of it (globex's only under globex's key).
    let service = |token: &str| {
        let r = http.request("POST", "/calls", Some(token), Some("number=service"));
        assert_eq!(r.status, 200, "{}", r.body);
        result_rows(&r.body).len()
    };
    let globex_service = oracle_calls("sipp_cancel.pcap", "service").1;
    let acme_service = oracle_calls("sipp_g711_basic.pcap", "service").1;
    assert!(globex_service > 0 && acme_service > 0);
    assert_eq!(service(&globex), globex_service);
    assert_eq!(service(&acme), acme_service);
    // A number in a GET query string is ignored, not searched for.
    let ignored = http.get("/calls?number=%2B33360653674", Some(&acme));
    assert_eq!(result_rows(&ignored.body).len(), acme_calls);
    let call = http.get(&call_links(&found.body)[0], Some(&acme));
    assert_eq!(call.status, 200);
    // Bad input: a typed error with a status, never a panic.
    let bad = http.request("POST", "/calls", Some(&acme), Some("mos=9"));
    assert_eq!(bad.status, 400);
    let huge = http.request("POST", "/calls", Some(&acme), Some(&"a".repeat(20 * 1024)));
    assert_eq!(huge.status, 413);
    assert_eq!(http.get("/calls/x", Some(&acme)).status, 404);
    assert_eq!(
        http.get(&format!("/calls/{}", "a".repeat(300)), Some(&acme))
            .status,
        404
    );
    for (what, r) in [
        ("acme /calls", acme_page),
        ("globex /calls", globex_page),
        ("search", found),
        ("csv", csv),
        ("call", call),
        ("globex call", own),
    ] {
        pages.push((what.into(), r.body));
    }
    // Quality: each tenant's streams per hour and agent, as its captures' oracles have
    // them; globex's calls were all cancelled, without media. The default range (the last
    // 24 h) holds none of these years-old captures; a range the wrong way round is a 400.
    let acme_quality = http.get(ALL_TIME, Some(&acme));
    assert_eq!(acme_quality.status, 200, "{}", acme_quality.body);
    assert_security_headers(ALL_TIME, &acme_quality);
    assert_eq!(
        quality_rows(&acme_quality.body),
        oracle_quality(&[
            ("sipp_g711_basic.pcap", "sbc-a"),
            ("ws_nb6-telephone.pcap", "sbc-a2"),
        ])
    );
    assert!(acme_quality.body.contains("<svg"));
    assert!(!acme_quality.body.contains("sbc-g"));
    let globex_quality = http.get(ALL_TIME, Some(&globex));
    assert_eq!(
        quality_rows(&globex_quality.body),
        oracle_quality(&[("sipp_cancel.pcap", "sbc-g")])
    );
    assert!(quality_rows(&globex_quality.body).is_empty());
    assert!(!globex_quality.body.contains("sbc-a"));
    let recent = http.get("/quality", Some(&acme));
    assert_eq!(recent.status, 200);
    assert!(quality_rows(&recent.body).is_empty());
    let backwards = http.get("/quality?from=1h&to=2h", Some(&acme));
    assert_eq!(backwards.status, 400);
    assert_security_headers("/quality", &backwards);
    for (what, r) in [
        ("acme quality", acme_quality),
        ("globex quality", globex_quality),
        ("recent quality", recent),
    ] {
        pages.push((what.into(), r.body));
    }

    // Usage of the month of the sipp captures (2026-11): no rate table was imported, so
    // rating is off; acme's answered calls are all unrated, globex's cancelled ones are
    // attempts to no destination.
    let (acme_answered, _) = oracle_answered("sipp_g711_basic.pcap");
    let (globex_answered, globex_failed) = oracle_answered("sipp_cancel.pcap");
    let month = "/usage?month=2026-11";
    let acme_usage = http.get(month, Some(&acme));
    assert_eq!(acme_usage.status, 200, "{}", acme_usage.body);
    assert_security_headers(month, &acme_usage);
    assert!(acme_usage.body.contains("Rating is not configured"));
    let unrated: usize = table_cells(&acme_usage.body, "unrated")
        .iter()
        .map(|r| r[1].parse::<usize>().unwrap())
        .sum();
    assert_eq!(unrated, acme_answered);
    assert!(table_cells(&acme_usage.body, "usage").is_empty());
    let globex_usage = http.get(month, Some(&globex));
    assert!(table_cells(&globex_usage.body, "unrated").is_empty());
    let attempts = table_cells(&globex_usage.body, "usage");
    assert_eq!(attempts.len(), 1, "{attempts:?}");
    // calls, answered
    assert_eq!(
        attempts[0][2],
        (globex_answered + globex_failed).to_string()
    );
    assert_eq!(attempts[0][3], globex_answered.to_string());
    let this_month = http.get("/usage", Some(&acme));
    assert_eq!(this_month.status, 200);
    let bad_month = http.get("/usage?month=2026-13", Some(&acme));
    assert_eq!(bad_month.status, 400);
    assert_security_headers("/usage", &bad_month);

    // The data inventory: the same register for every tenant, with this server's retention
    // (--retention-days 0).
    let inventory = http.get("/inventory", Some(&globex));
    assert_eq!(inventory.status, 200);
    assert_security_headers("/inventory", &inventory);
    let fields = table_cells(&inventory.body, "inventory");
    assert!(fields.iter().any(|r| r[0] == "caller_user"), "{fields:?}");
    assert!(fields
        .iter()
        .filter(|r| r[7] != "never stored")
        .all(|r| r[7].ends_with("central store until erased")));
    assert_eq!(http.get("/inventory", Some(&acme)).body, inventory.body);
    for (what, r) in [
        ("acme usage", acme_usage),
        ("globex usage", globex_usage),
        ("usage this month", this_month),
        ("inventory", inventory),
    ] {
        pages.push((what.into(), r.body));
    }

    // Logout clears the cookie.
    let out = http.request("POST", "/logout", Some(&acme), Some(""));
    assert_eq!(out.status, 303);
    assert!(out.header("set-cookie").unwrap().contains("Max-Age=0"));

    for (what, html) in &pages {
        Console::assert_no_canary(what, html);
    }
    Console::assert_no_canary("the server log", &c.log());
    assert!(c.log().contains("web console listening"));
}

/// In headless chromium over TLS: /calls sends to the login page; log in with a read
/// token; search by the number → the oracle's calls; open the call → the quality chart and
/// the oracle's packet counts per direction and its SIP messages as a ladder. Screenshots in target/web-screens/.
#[test]
fn browser_logs_in_searches_and_opens_a_call() {
    let c = Console::start();
    let screens = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/web-screens");
    let b = Browser::start(&c.dir.path().join("chromedriver.log"));
    let base = format!("https://localhost:{}", c.web.port());
    let mut sources = Vec::new();

    b.goto(&format!("{base}/calls"));
    assert!(b.url().ends_with("/login"), "{}", b.url());
    b.find("input[name=token]");
    b.screenshot(&screens.join("login.png"));
    sources.push(("login", b.source()));

    b.log_in(&c.token("ops-acme", Role::Read, Some("acme"), 600));
    let all =
        oracle_calls("sipp_g711_basic.pcap", "").0 + oracle_calls("ws_nb6-telephone.pcap", "").0;
    assert_eq!(b.find_all("table.calls tbody tr").len(), all);
    b.screenshot(&screens.join("calls.png"));
    sources.push(("calls", b.source()));

    b.type_into("input[name=number]", TYPED_NUMBER);
    b.click("form.search button");
    b.wait_until("the search results", |b| {
        b.source().contains("searching its pseudonyms")
    });
    let (_, want) = oracle_calls("ws_nb6-telephone.pcap", "+33360653674");
    assert_eq!(b.find_all("table.calls tbody tr").len(), want);
    b.screenshot(&screens.join("search.png"));
    sources.push(("search", b.source()));

    b.click("table.calls tbody tr a");
    b.wait_until("the call page", |b| b.url().contains("/calls/"));
    assert!(!b.find_all("svg.chart").is_empty());
    assert!(!b.find_all("svg.chart polyline").is_empty());
    let o = oracle("ws_nb6-telephone.pcap");
    for dir in ["caller_to_callee", "callee_to_caller"] {
        let packets: u64 = o["calls"][0]["rtp"][dir]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["packets"].as_u64().unwrap())
            .sum();
        assert_eq!(
            b.text(&format!("table.media tr.{dir} td:nth-child(4)")),
            packets.to_string(),
            "{dir}"
        );
    }
    // The SIP ladder: one arrow per message of the call, in the oracle's order.
    let call_id = o["calls"][0]["call_id"].as_str().unwrap();
    assert_eq!(
        ladder_labels(&b.source()),
        oracle_ladder("ws_nb6-telephone.pcap", call_id)
    );
    assert_eq!(b.find_all("svg.ladder g.hop").len(), 2);
    b.screenshot(&screens.join("call.png"));
    sources.push(("call", b.source()));

    // The quality page, from the navigation: charts and a row per hour and agent.
    b.click("nav a[href='/quality']");
    b.wait_until("the quality page", |b| b.url().ends_with("/quality"));
    b.goto(&format!("{base}{ALL_TIME}"));
    assert_eq!(b.find_all("svg.chart").len(), 3);
    assert_eq!(b.find_all("table.quality tbody tr").len(), 2);
    b.screenshot(&screens.join("quality.png"));
    sources.push(("quality", b.source()));

    // Log out, log in as the other tenant: its calls only, and acme's call is not found.
    let acme_call = links(&sources[2].1, "/calls/").remove(0);
    b.click("nav form button");
    b.wait_until("the login page", |b| b.url().ends_with("/login"));
    b.goto(&format!("{base}/calls"));
    assert!(b.url().ends_with("/login"), "logged out: {}", b.url());
    b.log_in(&c.token("ops-globex", Role::Read, Some("globex"), 600));
    assert_eq!(
        b.find_all("table.calls tbody tr").len(),
        oracle_calls("sipp_cancel.pcap", "").0
    );
    b.goto(&format!("{base}{acme_call}"));
    assert!(b.source().contains("no such call"), "{}", b.source());
    assert!(b.find_all("svg.ladder").is_empty());
    b.goto(&format!("{base}{ALL_TIME}"));
    assert_eq!(
        b.find_all("table.quality tbody tr").len(),
        oracle_quality(&[("sipp_cancel.pcap", "sbc-g")]).len()
    );
    sources.push(("globex", b.source()));
    // Usage of the sipp captures' month: globex's attempts only, none of acme's calls.
    b.goto(&format!("{base}/usage?month=2026-11"));
    let usage = b.source();
    let attempts = table_cells(&usage, "usage");
    let (answered, failed) = oracle_answered("sipp_cancel.pcap");
    assert_eq!(attempts.len(), 1, "{attempts:?}");
    assert_eq!(attempts[0][2], (answered + failed).to_string());
    assert!(
        table_cells(&usage, "unrated").is_empty(),
        "acme's calls: {usage}"
    );
    b.screenshot(&screens.join("usage-globex.png"));
    sources.push(("globex usage", usage));

    for (what, html) in &sources {
        Console::assert_no_canary(what, html);
    }
    Console::assert_no_canary("the server log", &c.log());
}

/// A call state event now, with pseudonymized parties as an agent sends them.
fn call_state(
    call: &str,
    state: CallStateKind,
    caller: &str,
    callee: &str,
    trigger: &str,
) -> FlowEvent {
    let party = |user: &str| {
        Some(Party {
            user: user.into(),
            ..Default::default()
        })
    };
    FlowEvent {
        time_ms: collector::server::retention::now_ms(),
        call_id: call.into(),
        event: Some(Event::CallState(CallState {
            state: state as i32,
            caller: party(caller),
            callee: party(callee),
            trigger: trigger.into(),
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// A new call now (INVITE seen): `caller` calls `n_acme_bob` or, for a globex caller,
/// `n_globex_dan`.
fn trying(call: &str, caller: &str) -> FlowEvent {
    let callee = if caller.starts_with("n_globex") {
        "n_globex_dan"
    } else {
        "n_acme_bob"
    };
    call_state(call, CallStateKind::Trying, caller, callee, "INVITE")
}

/// A media statistics event now, caller → callee, with this MOS.
fn media(call: &str, mos: f64) -> FlowEvent {
    FlowEvent {
        time_ms: collector::server::retention::now_ms(),
        call_id: call.into(),
        event: Some(Event::MediaStats(MediaStats {
            leg: Some(Box::new(MediaLeg {
                direction: MediaDirection::CallerToCallee as i32,
                mos,
                ..Default::default()
            })),
            interval_ms: 10_000,
        })),
        ..Default::default()
    }
}

/// The rows of the /live table without their start times, sorted; and the callers of
/// those marked ended.
fn live_rows(html: &str) -> (Vec<Vec<String>>, Vec<String>) {
    let mut rows: Vec<Vec<String>> = table_cells(html, "live")
        .into_iter()
        .map(|mut r| {
            r.remove(4);
            r
        })
        .collect();
    rows.sort();
    let ended = html
        .split("<tr class=\"ended\"")
        .skip(1)
        .map(|r| {
            r.split("<td>")
                .nth(3)
                .unwrap()
                .split("</td>")
                .next()
                .unwrap()
                .to_string()
        })
        .collect();
    (rows, ended)
}

/// What the stream of /live/events sent until `enough` held for it (at most `limit`),
/// checked to be a 200 event stream with the security headers.
fn live_stream(
    http: &Https,
    cookie: &str,
    since_ms: u64,
    limit: Duration,
    enough: impl Fn(&str) -> bool,
) -> String {
    let path = format!("/live/events?since={since_ms}");
    let raw = http.stream(&path, Some(cookie), limit, enough);
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let head = head.to_ascii_lowercase();
    assert!(head.contains("content-type: text/event-stream"), "{head}");
    assert!(head.contains("script-src 'self'"), "{head}");
    body.to_string()
}

const TEN_S: Duration = Duration::from_secs(10);

/// Call events in a piece of an event stream.
fn call_events(body: &str) -> usize {
    body.matches("event: call\n").count()
}

/// /live and /live/events: events of two tenants go into the relay, interleaved; each
/// tenant's token sees its own calls only (on the page, and in the stream, which would have
/// shown the other's events before its own last one had they leaked); without a valid
/// token, the login page and no data. Counts are those of the events published here.
#[test]
fn live_calls_show_each_tenant_only_its_own() {
    let c = Console::spawn();
    let http = c.https();
    let since = collector::server::retention::now_ms() - 1_000;

    // No token, a forged one, an ingest token: the login page, no data.
    let ingest = c.token("sbc-a", Role::Ingest, Some("acme"), 600);
    for cookie in [
        None,
        Some("collector_token=forged.token.value".to_string()),
        Some(format!("collector_token={ingest}")),
    ] {
        for path in ["/live", "/live/events", "/live/events?since=0"] {
            let r = http.get(path, cookie.as_deref());
            assert_eq!(r.status, 303, "{path} {cookie:?}");
            assert_eq!(r.header("location"), Some("/login"), "{path}");
            assert!(!r.body.contains("<table"), "{path}: {}", r.body);
            assert!(!r.body.contains("event:"), "{path}: {}", r.body);
            assert_security_headers(path, &r);
        }
    }
    let script = http.get("/static/live.js", None);
    assert_eq!(script.status, 200);
    assert!(script
        .header("content-type")
        .unwrap()
        .starts_with("text/javascript"));
    assert!(script.body.contains("EventSource"));
    assert_security_headers("/static/live.js", &script);

    // acme: a-1 answered with media, a-2 tried and ended; globex: g-1 trying with media;
    // published interleaved, acme's last event after all of globex's.
    use CallStateKind::{Answered, Ended};
    c.publish("sbc-a", "acme", vec![trying("a-1", "n_acme_alice")]);
    c.publish(
        "sbc-g",
        "globex",
        vec![trying("g-1", "n_globex_carol"), media("g-1", 3.0)],
    );
    c.publish(
        "sbc-a",
        "acme",
        vec![
            call_state("a-1", Answered, "n_acme_alice", "n_acme_bob", "200"),
            media("a-1", 4.1),
            trying("a-2", "n_acme_erin"),
            call_state("a-2", Ended, "n_acme_erin", "n_acme_bob", "CANCEL"),
        ],
    );
    let (acme_events, globex_events) = (5, 2);

    let acme = c.login(&c.token("ops-acme", Role::Read, Some("acme"), 600));
    let globex = c.login(&c.token("ops-globex", Role::Read, Some("globex"), 600));
    let page = http.get("/live", Some(&acme));
    assert_eq!(page.status, 200, "{}", page.body);
    assert_security_headers("/live", &page);
    // The script is this server's file; none inline.
    assert_eq!(page.body.matches("<script").count(), 1);
    assert!(page
        .body
        .contains("<script src=\"/static/live.js\" defer></script>"));
    assert!(page.body.contains("<a href=\"/live\">Live</a>"));
    // agent, state, caller, callee, trigger, MOS
    let (rows, ended) = live_rows(&page.body);
    assert_eq!(
        rows,
        [
            [
                "sbc-a",
                "answered",
                "n_acme_alice",
                "n_acme_bob",
                "200",
                "4.10"
            ],
            ["sbc-a", "ended", "n_acme_erin", "n_acme_bob", "CANCEL", "-"],
        ]
    );
    assert_eq!(ended, ["n_acme_erin"]);
    assert!(!page.body.contains("globex"), "{}", page.body);
    let page = http.get("/live", Some(&globex));
    let (rows, ended) = live_rows(&page.body);
    assert_eq!(
        rows,
        [[
            "sbc-g",
            "trying",
            "n_globex_carol",
            "n_globex_dan",
            "INVITE",
            "3.00"
        ]]
    );
    assert!(ended.is_empty());
    assert!(!page.body.contains("acme"), "{}", page.body);

    // The streams from before the first event: each tenant's events, whole rows.
    let body = live_stream(&http, &acme, since, TEN_S, |s| {
        call_events(s) >= acme_events
    });
    assert_eq!(call_events(&body), acme_events, "{body}");
    assert!(!body.contains("globex"), "{body}");
    assert!(body.contains("\"caller\":\"n_acme_erin\""), "{body}");
    assert!(body.contains("\"ended\":true"), "{body}");
    let body = live_stream(&http, &globex, since, TEN_S, |s| {
        call_events(s) >= globex_events
    });
    assert_eq!(call_events(&body), globex_events, "{body}");
    assert!(!body.contains("acme"), "{body}");
    assert!(body.contains("\"mos\":\"3.00\""), "{body}");
    // From now on: nothing yet (the events before `since` only fill the rows in).
    let now = collector::server::retention::now_ms() + 1;
    let body = live_stream(&http, &acme, now, Duration::from_secs(2), |s| {
        s.contains("event: call")
    });
    assert_eq!(call_events(&body), 0, "{body}");
}

/// In headless chromium: /live from the navigation lists acme's call; a call published
/// after the page was drawn appears within 10 s and then turns answered, while a globex
/// call published meanwhile never does. Screenshot in target/web-screens/live.png.
#[test]
fn browser_sees_new_calls_live() {
    let c = Console::spawn();
    use CallStateKind::Answered;
    c.publish("sbc-a", "acme", vec![trying("a-1", "n_acme_alice")]);
    let screens = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/web-screens");
    let b = Browser::start(&c.dir.path().join("chromedriver.log"));
    let base = format!("https://localhost:{}", c.web.port());
    b.goto(&format!("{base}/live"));
    assert!(b.url().ends_with("/login"), "{}", b.url());
    b.log_in(&c.token("ops-acme", Role::Read, Some("acme"), 600));
    b.click("nav a[href='/live']");
    b.wait_until("the live page", |b| b.url().ends_with("/live"));
    assert_eq!(b.find_all("table.live tbody tr").len(), 1);
    b.wait_until("the event stream", |b| {
        b.text("#live-status").starts_with("Live")
    });

    c.publish("sbc-a", "acme", vec![trying("a-3", "n_acme_frank")]);
    b.wait_until("the new call", |b| {
        b.find_all("table.live tbody tr").len() == 2 && b.source().contains("n_acme_frank")
    });
    c.publish("sbc-g", "globex", vec![trying("g-1", "n_globex_carol")]);
    c.publish(
        "sbc-a",
        "acme",
        vec![
            call_state("a-3", Answered, "n_acme_frank", "n_acme_bob", "200"),
            media("a-3", 4.3),
        ],
    );
    let cell = |n: usize| format!("table.live tr[data-call='a-3'] td:nth-child({n})");
    b.wait_until("the call answered", |b| {
        b.text(&cell(2)) == "answered" && b.text(&cell(7)) == "4.30"
    });
    assert_eq!(b.find_all("table.live tbody tr").len(), 2);
    assert!(!b.source().contains("globex"));
    b.screenshot(&screens.join("live.png"));
}
