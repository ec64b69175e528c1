//! The playground as a person uses it: `peerguard playground` serves the page, headless
//! Chromium (driven through chromedriver by fantoccini) loads it, forms are filled and
//! buttons clicked, and what the page shows is compared with `peerguard test`'s in-process
//! decisions (`scenario::run_in_process`, the function `peerguard test` runs).
//!
//! Needs `chromium` and `chromedriver` on PATH (scripts/setup-browser.sh) and a `peerguard`
//! built after scripts/build-playground.sh (scripts/test-playground.sh does all of it).
//! Without them the test prints one SKIPPED line, unless PEERGUARD_REQUIRE_BROWSER=1.
//! Screenshots go to $CARGO_TARGET_DIR/playground-screenshots/; with
//! PEERGUARD_UPDATE_README_IMAGE=1 the main one is also copied to docs/playground.png.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use fantoccini::{Client, ClientBuilder, Locator};
use peerguard_filter::istio::parse::parse_str;
use peerguard_filter::scenario::{load_file, run_in_process, Protocol, Scenario, ScenarioRequest};
use peerguard_playground::scenario_io::import;
use serde_json::json;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(name))
            .find(|f| f.is_file())
    })
}

fn skip_or_fail(why: &str) {
    if std::env::var("PEERGUARD_REQUIRE_BROWSER").is_ok_and(|v| v == "1") {
        panic!("PEERGUARD_REQUIRE_BROWSER=1 but {why}");
    }
    println!("SKIPPED playground browser test: {why} (run scripts/test-playground.sh)");
}

fn target_dir() -> PathBuf {
    // tests run from $CARGO_TARGET_DIR/debug/deps/
    let exe = std::env::current_exe().unwrap();
    exe.parent()
        .and_then(Path::parent)
        .and_then(Path::parent)
        .unwrap()
        .to_path_buf()
}

fn peerguard_bin() -> PathBuf {
    std::env::var_os("PEERGUARD_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| target_dir().join("debug/peerguard"))
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn case_files() -> Vec<PathBuf> {
    // The project's cases (CONFORMANCE_DIR, as scripts/test.sh sets it), and the upstream
    // shared ones when present; a file name seen twice is read once.
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let own = std::env::var_os("CONFORMANCE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo.join("integration/conformance/cases"));
    let shared = std::env::var_os("SHARED_CONFORMANCE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo.join("../shared/conformance/cases"));
    let mut files: std::collections::BTreeMap<std::ffi::OsString, PathBuf> = Default::default();
    for (dir, required) in [(own, true), (shared, false)] {
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if required => panic!("{}: {e}", dir.display()),
            Err(_) => continue,
        };
        for e in entries {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "yaml") {
                files.entry(p.file_name().unwrap().to_owned()).or_insert(p);
            }
        }
    }
    let files: Vec<PathBuf> = files.into_values().collect();
    files
}

/// Start `peerguard playground` on a free port; its URL.
fn start_playground() -> Result<(Killed, String), String> {
    let bin = peerguard_bin();
    if !bin.is_file() {
        return Err(format!("{} not built", bin.display()));
    }
    let mut child = Command::new(&bin)
        .args(["playground", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{}: {e}", bin.display()))?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    match line.trim().strip_prefix("playground: ") {
        Some(url) => Ok((Killed(child), url.to_string())),
        None => {
            let status = child.wait().unwrap();
            let mut err = String::new();
            std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
            Err(format!(
                "`peerguard playground` exited ({status}): {}",
                err.trim()
            ))
        }
    }
}

fn start_chromedriver(driver: &Path) -> (Killed, u16) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(driver)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "chromedriver did not listen on {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (Killed(child), port)
}

async fn connect(port: u16, chromium: &Path) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": chromium,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1400,1500", "--hide-scrollbars", "--force-device-scale-factor=1"],
        }),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .expect("a WebDriver session")
}

/// Wait until the page has loaded the engine and decided once.
async fn wait_ready(c: &Client) {
    c.wait()
        .at_most(Duration::from_secs(30))
        .for_element(Locator::Css("body[data-ready='1']"))
        .await
        .expect("the page did not become ready (engine not loaded?)");
}

async fn evaluations(c: &Client) -> u64 {
    let v = c
        .execute(
            "return Number(document.body.dataset.evaluations || 0)",
            vec![],
        )
        .await
        .unwrap();
    v.as_u64().unwrap_or(0)
}

/// Rows of the decisions table as shown: (decision, reason).
async fn shown_rows(c: &Client) -> Vec<(String, String)> {
    let v = c
        .execute(
            "return [...document.querySelectorAll('#requests tbody tr')].map(tr => \
             [tr.querySelector('td.decision').innerText, tr.querySelector('td.reason').innerText])",
            vec![],
        )
        .await
        .unwrap();
    serde_json::from_value(v).unwrap()
}

/// What `peerguard test` decides, in the page's words.
fn expected_rows(s: &Scenario) -> Vec<(String, String)> {
    let (_, results) = run_in_process(s);
    results
        .iter()
        .map(|r| match &r.decision {
            None => (
                "e2e only".to_string(),
                "decided by the TLS handshake with real certificates (run end to end)".to_string(),
            ),
            Some(d) => (
                (if d.allowed { "ALLOW" } else { "DENY" }).to_string(),
                d.reason.to_string(),
            ),
        })
        .collect()
}

async fn set_value(c: &Client, id: &str, text: &str) {
    // What a paste does: the whole text at once, then an input event.
    c.execute(
        "const e = document.getElementById(arguments[0]); e.value = arguments[1]; \
         e.dispatchEvent(new Event('input', {bubbles: true}));",
        vec![json!(id), json!(text)],
    )
    .await
    .unwrap();
}

async fn type_into(c: &Client, id: &str, text: &str) {
    let e = c.find(Locator::Id(id)).await.unwrap();
    e.clear().await.unwrap();
    if !text.is_empty() {
        e.send_keys(text).await.unwrap();
    }
}

async fn choose(c: &Client, id: &str, value: &str) {
    let e = c.find(Locator::Id(id)).await.unwrap();
    e.select_by_value(value).await.unwrap();
}

async fn click(c: &Client, id: &str) {
    c.find(Locator::Id(id))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

async fn screenshot(c: &Client, name: &str) -> PathBuf {
    let dir = target_dir().join("playground-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}.png"));
    std::fs::write(&path, c.screenshot().await.unwrap()).unwrap();
    path
}

/// Fill the workload and request forms field by field, as a person would, for one case.
async fn fill_forms(c: &Client, s: &Scenario, resources_yaml: &str) {
    type_into(c, "resources", resources_yaml).await;
    let w = &s.workload;
    type_into(c, "wl-namespace", &w.namespace).await;
    type_into(c, "wl-name", &w.name).await;
    type_into(c, "wl-sa", &w.service_account).await;
    let labels: Vec<String> = w.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    type_into(c, "wl-labels", &labels.join(", ")).await;
    type_into(c, "wl-services", &w.services.join(", ")).await;
    let ports: Vec<String> = w
        .service_ports
        .iter()
        .map(|p| {
            format!(
                "{}{} {}->{}",
                p.service,
                p.name
                    .as_deref()
                    .map(|n| format!(":{n}"))
                    .unwrap_or_default(),
                p.port,
                p.target_port
            )
        })
        .collect();
    type_into(c, "wl-ports", &ports.join(", ")).await;
    let details = c
        .find(Locator::Css("#pane-resources details"))
        .await
        .unwrap();
    if details.prop("open").await.unwrap().as_deref() != Some("true") {
        c.find(Locator::Css("#pane-resources details summary"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
    }
    type_into(c, "trust-domain", &s.trust_domain).await;
    type_into(c, "root-namespace", &s.root_namespace).await;
    type_into(c, "aliases", &s.trust_domain_aliases.join(", ")).await;
    choose(c, "path-normalization", s.path_normalization.as_str()).await;
    // Start from an empty request list.
    while !shown_rows(c).await.is_empty() {
        click(c, "rq-remove").await;
    }
    for r in s.requests.iter().filter(|r| !r.e2e_only) {
        fill_request(c, r).await;
        click(c, "rq-add").await;
    }
}

async fn fill_request(c: &Client, r: &ScenarioRequest) {
    type_into(c, "rq-about", r.about.as_deref().unwrap_or_default()).await;
    match &r.peer {
        Some(p) => {
            choose(c, "rq-client", "mtls").await;
            type_into(
                c,
                "rq-principal",
                p.principal.as_deref().unwrap_or_default(),
            )
            .await;
        }
        None => choose(c, "rq-client", "plaintext").await,
    }
    type_into(
        c,
        "rq-source-ip",
        &r.source_ip.map(|ip| ip.to_string()).unwrap_or_default(),
    )
    .await;
    type_into(c, "rq-port", &r.port.to_string()).await;
    match (&r.protocol, &r.http) {
        (Protocol::Http, Some(h)) => {
            choose(c, "rq-protocol", "http").await;
            let v = if matches!(
                h.version,
                Some(peerguard_filter::schema::HttpVersion::Http2)
            ) {
                "2"
            } else {
                "1.1"
            };
            choose(c, "rq-version", v).await;
            type_into(c, "rq-method", &h.method).await;
            type_into(c, "rq-path", &h.path).await;
            type_into(c, "rq-host", &h.host).await;
            let lines: Vec<String> = h
                .headers
                .iter()
                .flat_map(|(k, v)| v.iter().map(move |v| format!("{k}: {v}")))
                .collect();
            type_into(c, "rq-headers", &lines.join("\n")).await;
        }
        _ => choose(c, "rq-protocol", "tcp").await,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_decides_as_peerguard_test() {
    let (Some(chromium), Some(driver)) = (which("chromium"), which("chromedriver")) else {
        return skip_or_fail(
            "chromium or chromedriver not on PATH (scripts/setup-browser.sh installs them)",
        );
    };
    let (_server, url) = match start_playground() {
        Ok(v) => v,
        Err(e) => return skip_or_fail(&e),
    };
    let (_driver, port) = start_chromedriver(&driver);
    let c = connect(port, &chromium).await;
    let result = scenarios(&c, &url).await;
    let _ = c.close().await;
    result.unwrap_or_else(|e| panic!("{e}"));
}

async fn scenarios(c: &Client, url: &str) -> Result<(), String> {
    // --- first load: the default example is decided at once -------------------------------
    c.goto(url).await.map_err(|e| e.to_string())?;
    wait_ready(c).await;
    let timing = c
        .execute("return window.playgroundTiming", vec![])
        .await
        .unwrap();
    println!("time to first decision: {timing} (ms after navigation start)");
    let rows = shown_rows(c).await;
    assert_eq!(rows.len(), 3, "{rows:?}");
    let main_shot = screenshot(c, "decisions").await;

    // --- time to first decision over a few fresh loads (reported, not asserted: timing
    // goals belong in benchmarks) ------------------------------------------------------------
    let mut firsts = Vec::new();
    for _ in 0..5 {
        c.goto("about:blank").await.unwrap();
        c.goto(url).await.unwrap();
        wait_ready(c).await;
        let t = c
            .execute("return window.playgroundTiming", vec![])
            .await
            .unwrap();
        firsts.push(t["firstDecisionMs"].as_f64().unwrap_or(f64::NAN));
    }
    firsts.sort_by(f64::total_cmp);
    println!(
        "first decision after navigation start over {} loads: min {:.0} ms, median {:.0} ms, max {:.0} ms",
        firsts.len(),
        firsts[0],
        firsts[firsts.len() / 2],
        firsts[firsts.len() - 1]
    );

    // --- examples: a sandbox stage and a project case ----------------------------------------
    c.wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::XPath(
            "//select[@id='examples']/option[contains(., 'sandbox stage 3-strict')]",
        ))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    click(c, "load-example").await;
    c.wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::XPath(
            "//td[contains(@class, 'client') and starts-with(., 'plaintext')]",
        ))
        .await
        .unwrap();
    let rows = shown_rows(c).await;
    let strict = peerguard_filter::schema::Reason::PlaintextRefused.to_string();
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(rows[0].0, "ALLOW", "{rows:?}");
    assert_eq!(
        rows[1],
        ("DENY".to_string(), strict),
        "stage 3: STRICT refuses the plaintext client"
    );
    screenshot(c, "sandbox-stage-3").await;

    // --- every conformance case, imported through the scenario box ------------------------
    let cases = case_files();
    assert!(cases.len() > 20, "only {} cases", cases.len());
    let mut checked = 0;
    for f in &cases {
        let text = std::fs::read_to_string(f).unwrap();
        let s = load_file(f).unwrap();
        set_value(c, "scenario-text", &text).await;
        click(c, "import").await;
        let err = c
            .find(Locator::Id("scenario-error"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(err.is_empty(), "{}: import refused: {err}", f.display());
        let shown = shown_rows(c).await;
        let want = expected_rows(&s);
        assert_eq!(
            shown,
            want,
            "{}: the page shows other decisions than `peerguard test`",
            f.display()
        );
        checked += want.len();
    }
    println!(
        "{} cases, {checked} requests: the page shows peerguard test's decisions",
        cases.len()
    );

    // --- the result pane: mTLS verdict and its origin for a selected request --------------
    let f = cases
        .iter()
        .find(|f| f.to_string_lossy().contains("006-port-level-mtls"))
        .unwrap();
    set_value(c, "scenario-text", &std::fs::read_to_string(f).unwrap()).await;
    click(c, "import").await;
    let s = load_file(f).unwrap();
    let (policy, results) = run_in_process(&s);
    for (i, r) in s.requests.iter().enumerate() {
        c.find(Locator::Css(&format!(
            "#requests tbody tr[data-index='{i}']"
        )))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
        let mtls = c
            .find(Locator::Id("res-mtls"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let m = policy.mtls.for_port(r.port);
        let mode = format!("{:?}", m.mode).to_uppercase();
        assert!(
            mtls.starts_with(&format!("port {} is {mode} (", r.port)),
            "request {i}: {mtls}"
        );
        if let Some(from) = &m.from {
            assert!(
                mtls.contains(from.as_str()),
                "request {i}: {mtls} (want {from})"
            );
        }
        let reason = c
            .find(Locator::Id("res-reason"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if let Some(d) = &results[i].decision {
            assert_eq!(reason, d.reason.to_string(), "request {i}");
        }
    }

    // --- forms filled field by field ------------------------------------------------------
    for name in [
        "015-authz-deny-method-get",
        "017-authz-tcp-allow-ports",
        "103-repeated-header-deny",
    ] {
        let f = cases
            .iter()
            .find(|f| f.to_string_lossy().contains(name))
            .unwrap();
        let s = load_file(f).unwrap();
        let yaml = import(&std::fs::read_to_string(f).unwrap(), "case.yaml")
            .unwrap()
            .resources;
        fill_forms(c, &s, &yaml).await;
        click(c, "decide").await;
        let shown = shown_rows(c).await;
        let want: Vec<_> = expected_rows(&s)
            .into_iter()
            .zip(&s.requests)
            .filter(|(_, r)| !r.e2e_only)
            .map(|(w, _)| w)
            .collect();
        assert_eq!(shown, want, "{name}, typed into the forms");
    }
    screenshot(c, "typed-forms").await;

    // --- the matrix -------------------------------------------------------------------------
    let before = evaluations(c).await;
    type_into(
        c,
        "matrix-sources",
        "cluster.local/ns/foo/sa/sleep\nplaintext @ 10.0.0.9",
    )
    .await;
    click(c, "decide").await;
    assert!(evaluations(c).await > before);
    let cells = c.find_all(Locator::Css("#matrix tbody td")).await.unwrap();
    assert_eq!(cells.len(), 2 * shown_rows(c).await.len());
    c.find(Locator::Id("pane-matrix"))
        .await
        .unwrap()
        .screenshot()
        .await
        .map(|png| {
            std::fs::write(target_dir().join("playground-screenshots/matrix.png"), png).unwrap();
        })
        .unwrap();

    // --- export: the page's scenario runs with `peerguard test` ----------------------------
    click(c, "export").await;
    let exported = c
        .find(Locator::Id("scenario-text"))
        .await
        .unwrap()
        .prop("value")
        .await
        .unwrap()
        .unwrap_or_default();
    let file = target_dir().join("playground-screenshots/exported-scenario.yaml");
    std::fs::write(&file, &exported).unwrap();
    let out = Command::new(peerguard_bin())
        .arg("test")
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "peerguard test {}: {}{}",
        file.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // --- bad YAML: the error is shown at its line ------------------------------------------
    let bad = "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata:\n  name: default\n  namespace: foo\nspec:\n  mtls:\n    mode: STRICT\n---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: broken\n  namespace: foo\nspec:\n  rules:\n  - from: [\n";
    let parsed = parse_str(bad, "resources.yaml");
    let error = parsed
        .errors
        .first()
        .expect("the parser refuses it")
        .to_string();
    type_into(c, "resources", bad).await;
    click(c, "decide").await;
    let items = c
        .find_all(Locator::Css("#diagnostics li.error"))
        .await
        .unwrap();
    assert_eq!(items.len(), 1);
    let shown = items[0].text().await.unwrap();
    let line = items[0]
        .attr("data-line")
        .await
        .unwrap()
        .unwrap_or_default();
    assert!(
        shown.ends_with(&error),
        "shown {shown:?}, parser says {error:?}"
    );
    assert!(
        error.contains(&format!("at line {line},")),
        "marked line {line}, error {error}"
    );
    let marked = c
        .find(Locator::Css("#gutter .bad"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(marked, line);
    let banner = c
        .find(Locator::Id("config-invalid"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(banner.starts_with("Every request is denied"), "{banner}");
    assert!(shown_rows(c).await.iter().all(|(d, _)| d == "DENY"));
    screenshot(c, "bad-yaml").await;

    // --- an invalid field: located in its document ------------------------------------------
    let invalid = bad.replace(
        "  rules:\n  - from: [\n",
        "  action: ALLOW\n  rules:\n  - from:\n    - source:\n        principals: [\"\"]\n",
    );
    type_into(c, "resources", &invalid).await;
    click(c, "decide").await;
    let item = c.find(Locator::Css("#diagnostics li.error")).await.unwrap();
    let line: usize = item
        .attr("data-line")
        .await
        .unwrap()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        invalid.lines().nth(line - 1).unwrap().trim(),
        "principals: [\"\"]"
    );
    let text = item.text().await.unwrap();
    assert!(
        text.contains("AuthorizationPolicy foo/broken") && text.contains("principals"),
        "{text}"
    );

    // --- shared link: the state survives a reload from the URL fragment ----------------------
    let here = c.current_url().await.unwrap();
    assert!(here.fragment().is_some_and(|f| f.starts_with("s=")));
    c.goto(url).await.unwrap();
    c.goto(here.as_str()).await.unwrap();
    c.refresh().await.unwrap();
    wait_ready(c).await;
    let kept = c
        .find(Locator::Id("resources"))
        .await
        .unwrap()
        .prop("value")
        .await
        .unwrap()
        .unwrap_or_default();
    assert_eq!(kept, invalid);

    if std::env::var("PEERGUARD_UPDATE_README_IMAGE").is_ok_and(|v| v == "1") {
        std::fs::copy(&main_shot, repo().join("docs/playground.png")).unwrap();
        println!("updated docs/playground.png");
    }
    Ok(())
}
