//! Clients for the web console tests: a small HTTP/1.1 client (one request per connection,
//! over TLS trusting the test PKI's CA, or plain TCP), and a W3C WebDriver client for
//! Debian's headless chromium through chromedriver (spawned on a free port, killed with
//! its browser when dropped).
use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    path::Path,
    sync::Arc,
    time::Duration,
};

use serde_json::{json, Value};

use super::{free_port, wait_listening, Proc};

/// One HTTP response.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Sends one request on `stream` (closed after the response) and reads the response.
fn exchange<S: Read + Write>(
    mut stream: S,
    host: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<(&str, &str)>,
) -> Reply {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    let body = body.map_or(("", ""), |b| b);
    if !body.0.is_empty() {
        req.push_str(&format!("Content-Type: {}\r\n", body.0));
    }
    req.push_str(&format!(
        "Content-Length: {}\r\n\r\n{}",
        body.1.len(),
        body.1
    ));
    stream.write_all(req.as_bytes()).unwrap();
    // Read up to the end of the head, then the body by its length (chromedriver keeps the
    // connection open), by its chunks, or to the end of the stream.
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let complete = |raw: &[u8]| -> bool {
        let text = String::from_utf8_lossy(raw);
        let Some((head, body)) = text.split_once("\r\n\r\n") else {
            return false;
        };
        let head = head.to_ascii_lowercase();
        if let Some(n) = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|n| n.trim().parse::<usize>().ok())
        {
            body.len() >= n
        } else {
            head.contains("chunked") && body.ends_with("0\r\n\r\n")
        }
    };
    while !complete(&raw) {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            // A server may close TLS without close_notify: what was read is the response.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => panic!("{method} {path}: {e}"),
        }
    }
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, rest) = text.split_once("\r\n\r\n").expect("an HTTP response");
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut reply = Reply {
        status,
        headers,
        body: rest.to_string(),
    };
    if reply
        .header("transfer-encoding")
        .is_some_and(|v| v.contains("chunked"))
    {
        reply.body = dechunk(rest);
    }
    reply
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        s = &rest[n + 2..];
    }
    out
}

/// An HTTPS client of the console that trusts `ca` and checks the name `localhost`.
pub struct Https {
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
}

impl Https {
    pub fn new(addr: SocketAddr, ca: &Path) -> Https {
        use rustls::pki_types::{pem::PemObject as _, CertificateDer};
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(ca).unwrap() {
            roots.add(c.unwrap()).unwrap();
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        Https {
            addr,
            config: Arc::new(config),
        }
    }

    /// One request; `cookie` is sent as the `Cookie` header, `form` as a urlencoded body.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        cookie: Option<&str>,
        form: Option<&str>,
    ) -> Reply {
        let tcp = TcpStream::connect(self.addr).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let conn = rustls::ClientConnection::new(
            Arc::clone(&self.config),
            "localhost".try_into().unwrap(),
        )
        .unwrap();
        let tls = rustls::StreamOwned::new(conn, tcp);
        let headers: Vec<(&str, &str)> = cookie.iter().map(|c| ("Cookie", *c)).collect();
        let body = form.map(|f| ("application/x-www-form-urlencoded", f));
        exchange(tls, "localhost", method, path, &headers, body)
    }

    pub fn get(&self, path: &str, cookie: Option<&str>) -> Reply {
        self.request("GET", path, cookie, None)
    }

    /// GETs a stream that does not end (server-sent events) and reads it, head and body as
    /// sent, until `enough` holds for what has come or `limit` has passed; then hangs up.
    pub fn stream(
        &self,
        path: &str,
        cookie: Option<&str>,
        limit: Duration,
        enough: impl Fn(&str) -> bool,
    ) -> String {
        let tcp = TcpStream::connect(self.addr).unwrap();
        // Short reads, so that the deadline is looked at while the stream is quiet.
        tcp.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let conn = rustls::ClientConnection::new(
            Arc::clone(&self.config),
            "localhost".try_into().unwrap(),
        )
        .unwrap();
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        let mut req =
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nAccept: text/event-stream\r\n");
        if let Some(c) = cookie {
            req.push_str(&format!("Cookie: {c}\r\n"));
        }
        req.push_str("\r\n");
        tls.write_all(req.as_bytes()).unwrap();
        let deadline = std::time::Instant::now() + limit;
        let mut raw = Vec::new();
        let mut buf = [0u8; 16 * 1024];
        while std::time::Instant::now() < deadline && !enough(&String::from_utf8_lossy(&raw)) {
            match tls.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => raw.extend_from_slice(&buf[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
                Err(e) => panic!("GET {path}: {e}"),
            }
        }
        String::from_utf8_lossy(&raw).into_owned()
    }
}

/// A headless chromium session driven through chromedriver (W3C WebDriver).
pub struct Browser {
    addr: SocketAddr,
    session: String,
    driver: Proc,
}

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

impl Browser {
    /// Starts chromedriver and a headless chromium that accepts the test's self-signed
    /// certificate. Fails (not skips) when they are missing: CI installs them through
    /// `cargo xtask setup`.
    pub fn start(log: &Path) -> Browser {
        for bin in ["/usr/bin/chromium", "/usr/bin/chromedriver"] {
            assert!(
                Path::new(bin).exists(),
                "{bin} is missing: the web console's browser tests need Debian's chromium and \
                 chromium-driver; run `cargo xtask setup`"
            );
        }
        let port = free_port();
        let mut cmd = std::process::Command::new("/usr/bin/chromedriver");
        // Its own process group, so that the browser it starts dies with it on drop.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        cmd.arg(format!("--port={port}"));
        let driver = Proc::spawn("chromedriver", cmd, log);
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        wait_listening(addr, Duration::from_secs(30));
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "acceptInsecureCerts": true,
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1280,1000"]
            }
        }}});
        // The guard first: a failed session request still ends the browser (see Drop).
        let mut browser = Browser {
            addr,
            session: String::new(),
            driver,
        };
        let v = call(addr, "POST", "/session", Some(&caps));
        browser.session = v["sessionId"].as_str().expect("a session").to_string();
        browser
    }

    fn cmd(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        call(
            self.addr,
            method,
            &format!("/session/{}{path}", self.session),
            body,
        )
    }

    pub fn goto(&self, url: &str) {
        self.cmd("POST", "/url", Some(&json!({ "url": url })));
    }

    pub fn url(&self) -> String {
        self.cmd("GET", "/url", None).as_str().unwrap().to_string()
    }

    pub fn source(&self) -> String {
        self.cmd("GET", "/source", None)
            .as_str()
            .unwrap()
            .to_string()
    }

    /// The elements matching a CSS selector.
    pub fn find_all(&self, css: &str) -> Vec<String> {
        let v = self.cmd(
            "POST",
            "/elements",
            Some(&json!({"using": "css selector", "value": css})),
        );
        v.as_array()
            .unwrap()
            .iter()
            .map(|e| e[ELEMENT].as_str().unwrap().to_string())
            .collect()
    }

    /// The one element matching `css`.
    pub fn find(&self, css: &str) -> String {
        let all = self.find_all(css);
        assert!(!all.is_empty(), "no {css} in {}", self.source());
        all[0].clone()
    }

    pub fn type_into(&self, css: &str, text: &str) {
        let e = self.find(css);
        self.cmd(
            "POST",
            &format!("/element/{e}/value"),
            Some(&json!({ "text": text })),
        );
    }

    pub fn click(&self, css: &str) {
        let e = self.find(css);
        self.cmd("POST", &format!("/element/{e}/click"), Some(&json!({})));
    }

    pub fn text(&self, css: &str) -> String {
        let e = self.find(css);
        self.cmd("GET", &format!("/element/{e}/text"), None)
            .as_str()
            .unwrap()
            .to_string()
    }

    /// Waits (up to 10 s) until `ready` holds, e.g. after a click that loads a page.
    pub fn wait_until(&self, what: &str, ready: impl Fn(&Browser) -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !ready(self) {
            assert!(
                std::time::Instant::now() < deadline,
                "timed out waiting for {what} at {}: {}",
                self.url(),
                self.source()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Logs in on the login page with `token` and waits for the calls page it leads to.
    pub fn log_in(&self, token: &str) {
        self.type_into("input[name=token]", token);
        self.click("form.login button");
        self.wait_until("the calls page", |b| b.url().ends_with("/calls"));
    }

    /// Writes a PNG of the window to `path`.
    pub fn screenshot(&self, path: &Path) {
        let b64 = self.cmd("GET", "/screenshot", None);
        let png = data_encoding::BASE64
            .decode(b64.as_str().unwrap().as_bytes())
            .unwrap();
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, png).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ends the browser; chromedriver itself is killed when `driver` drops.
        let (addr, path) = (self.addr, format!("/session/{}", self.session));
        let _ = std::panic::catch_unwind(move || call(addr, "DELETE", &path, None));
        // Whatever is left of the browser (a failed step, a hung driver).
        if let Ok(pgid) = i32::try_from(self.driver.child.id()) {
            // SAFETY: signals the process group of our own, not yet reaped, child.
            unsafe {
                libc::kill(-pgid, libc::SIGKILL);
            }
        }
    }
}

/// One WebDriver command; its `value`, or a panic with the driver's error.
fn call(addr: SocketAddr, method: &str, path: &str, body: Option<&Value>) -> Value {
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let text = body.map(Value::to_string);
    let body = text.as_deref().map(|b| ("application/json", b));
    let r = exchange(tcp, &addr.to_string(), method, path, &[], body);
    let v: Value = serde_json::from_str(&r.body)
        .unwrap_or_else(|e| panic!("{method} {path}: {e}: {}", r.body));
    assert_eq!(r.status, 200, "{method} {path}: {v}");
    v["value"].clone()
}
