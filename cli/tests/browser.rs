//! The dashboard in a real headless Chromium (Debian's `chromium` + `chromium-driver`, driven over
//! WebDriver with fantoccini), against the real binary: a farm run whose progress moves on the
//! page without a reload, a poisoned shard that turns failed and completes after its input is
//! fixed and the shard is resubmitted from the page, a job page showing a face source's 8 points
//! and the tiny bundle's faceless output's discard reason, regenerate on that QA failure, the
//! workers page; and the same pages over embedded mode. Screenshots go to `target/screenshots/`;
//! any error in the browser's console fails the test.

#[allow(dead_code)] // each test binary uses a part of the shared harness
mod support;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};
use support::dataset::{Backend, Dataset, IMAGES, astronaut, png};
use support::proc::Proc;
use support::services::free_port;
use support::{FAST, Farm, block_on};

const WAIT: Duration = Duration::from_secs(180);

/// Chromium's WebDriver on a free port, stopped with the test.
struct Driver {
    proc: Proc,
    url: String,
    _logs: tempfile::TempDir,
}

impl Driver {
    fn start() -> Driver {
        for tool in ["chromium", "chromedriver"] {
            let found = Command::new("sh").args(["-c", &format!("command -v {tool}")]).output().is_ok_and(|o| o.status.success());
            assert!(found, "{tool} is not installed; run scripts/setup.sh dev (it installs Debian's chromium and chromium-driver)");
        }
        let logs = tempfile::Builder::new().prefix("acufarm-chromedriver-").tempdir().unwrap();
        let port = free_port();
        let mut cmd = Command::new("chromedriver");
        cmd.arg(format!("--port={port}"));
        let mut proc = Proc::spawn("chromedriver", cmd, logs.path());
        proc.wait_for_line("was started successfully", Duration::from_secs(60)).expect("chromedriver starts");
        Driver { proc, url: format!("http://127.0.0.1:{port}"), _logs: logs }
    }

    async fn browser(&self) -> Client {
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1400,1000"],
            },
            "goog:loggingPrefs": { "browser": "ALL" },
        });
        let Value::Object(capabilities) = capabilities else { unreachable!() };
        ClientBuilder::rustls().expect("rustls").capabilities(capabilities).connect(&self.url).await.expect("a Chromium session")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        self.proc.kill9();
    }
}

/// chromedriver's log of the page's console (`goog:loggingPrefs`), read and cleared.
#[derive(Debug)]
struct BrowserLog;

impl fantoccini::wd::WebDriverCompatibleCommand for BrowserLog {
    fn endpoint(&self, base: &url::Url, session: Option<&str>) -> Result<url::Url, url::ParseError> {
        base.join(&format!("session/{}/se/log", session.unwrap_or_default()))
    }

    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        (http::Method::POST, Some(r#"{"type":"browser"}"#.to_string()))
    }
}

/// Fails on any error the page logged to the console (uncaught exceptions, failed loads).
async fn assert_no_console_errors(browser: &Client, page: &str) {
    let entries = browser.issue_cmd(BrowserLog).await.expect("the browser log");
    let errors: Vec<&Value> = entries.as_array().into_iter().flatten().filter(|entry| entry["level"] == "SEVERE").collect();
    assert!(errors.is_empty(), "console errors on the {page}: {errors:#?}");
}

fn screenshots() -> PathBuf {
    let dir = support::repo().join("target/screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn screenshot(browser: &Client, name: &str) {
    let png = browser.screenshot().await.expect("a screenshot");
    std::fs::write(screenshots().join(name), png).unwrap();
}

/// Waits until `probe` returns `Some`, polling the page; fails with `what` after `WAIT`.
async fn eventually<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out after {} s waiting for {what}", WAIT.as_secs());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Clicks what `css` finds, finding it again when the live page re-rendered it in between (a
/// stale element) or has not drawn it yet.
async fn click(browser: &Client, css: &str, what: &str) {
    eventually(what, || async { browser.find(Locator::Css(css)).await.ok()?.click().await.ok() }).await
}

async fn text_of(browser: &Client, css: &str) -> Option<String> {
    browser.find(Locator::Css(css)).await.ok()?.text().await.ok()
}

async fn attr_of(browser: &Client, css: &str, attr: &str) -> Option<String> {
    browser.find(Locator::Css(css)).await.ok()?.attr(attr).await.ok()?
}

async fn sign_in(browser: &Client, url: &str, token: &str) {
    browser.goto(url).await.unwrap();
    let field = browser.wait().at_most(WAIT).for_element(Locator::Css("#token")).await.expect("the sign-in form");
    field.send_keys(token).await.unwrap();
    browser.find(Locator::Css("#signin button[type=submit]")).await.unwrap().click().await.unwrap();
    browser.wait().at_most(WAIT).for_element(Locator::Css("#runs")).await.expect("the runs page after signing in");
}

/// `done / total` of a run on the runs page.
fn progress(text: &str) -> Option<(u64, u64)> {
    let (done, total) = text.split_once(" / ")?;
    Some((done.replace(',', "").trim().parse().ok()?, total.replace(',', "").trim().parse().ok()?))
}

#[test]
fn the_dashboard_follows_a_farm_run_and_its_actions_work() {
    let _serial = support::serial();
    let dir = tempfile::Builder::new().prefix("acufarm-browser-").tempdir().unwrap();
    let models = ["M_Asher_N_HD", "F_Grace_N_HA"];
    let data = Dataset::generate(&Backend::Fs, dir.path(), "browser", &models, &(1..=6).collect::<Vec<_>>());
    let poison = format!("{IMAGES}/F_Grace_N_HA_0002.png");
    let face = format!("{IMAGES}/M_Asher_N_HD_0003.png");
    let mut face_png = std::io::Cursor::new(Vec::new());
    astronaut().write_to(&mut face_png, image::ImageFormat::Png).unwrap();
    data.write_inputs(vec![(poison.clone(), b"\x89PNG\r\n\x1a\nnot an image".to_vec()), (face.clone(), face_png.into_inner())]);
    let n = data.expected.len() as u64;
    let run = "browser-run";
    let spec = data.write_spec("spec.toml", run, |s| format!("{s}\n[qa]\nmax_drift_px = 12.0\nmin_change = 1.0\nmax_retries = 1\n"));
    let mut farm = Farm::start(Vec::new(), FAST);
    farm.submit(&spec);
    let driver = Driver::start();
    let base = farm.http_url();
    block_on(async {
        let browser = driver.browser().await;
        sign_in(&browser, &format!("{base}/"), &farm.token).await;
        let cell = format!("[data-progress=\"{run}\"]");
        let before = eventually("the run on the runs page", || async { progress(&text_of(&browser, &cell).await?) }).await;
        assert_eq!(before, (0, n), "no worker yet");

        // Workers start; the page moves on its own (no reload, no navigation).
        farm.start_workers(&["w1", "w2"], 2);
        let moving =
            eventually("progress to move without a reload", || async { progress(&text_of(&browser, &cell).await?).filter(|(done, _)| *done > 0) }).await;
        farm.log(&format!("the runs page moved to {moving:?} without a reload"));
        eventually("every job to end", || async { progress(&text_of(&browser, &cell).await?).filter(|(done, total)| done == total) }).await;
        screenshot(&browser, "runs.png").await;
        assert_no_console_errors(&browser, "runs page").await;

        // The run page: the poisoned shard is failed.
        browser.goto(&format!("{base}/#/run/{run}")).await.unwrap();
        let grace = "[data-shard=\"F_Grace_N_HA\"]";
        eventually("the poisoned shard to show failed", || async { attr_of(&browser, grace, "data-state").await.filter(|s| s == "failed") }).await;
        screenshot(&browser, "run.png").await;
        // Fix the input, resubmit the shard from the page, and watch it complete.
        data.write_inputs(vec![(poison.clone(), png(2))]);
        click(&browser, grace, "a click on the failed shard").await;
        click(&browser, "#resubmit-shard", "a resubmit button on the failed shard").await;
        eventually("the resubmitted shard to succeed", || async { attr_of(&browser, grace, "data-state").await.filter(|s| s == "succeeded") }).await;
        assert_no_console_errors(&browser, "run page").await;

        // The face source's job: its 8 points, and the faceless output's discard reason.
        browser.goto(&format!("{base}/#/jobs/{run}?sample=M_Asher_N_HD_0003")).await.unwrap();
        click(&browser, "#jobs tbody a", "the face job in the listing").await;
        browser.wait().at_most(WAIT).for_element(Locator::Css("[data-figure=source] img")).await.expect("the source image");
        let points = browser.find_all(Locator::Css("[data-figure=source] circle[data-point]")).await.unwrap();
        assert_eq!(points.len(), 8, "the 8 landmarks of the source are drawn");
        let verdict = text_of(&browser, "#verdict").await.unwrap_or_default();
        assert!(verdict.contains("fail"), "{verdict}");
        let discarded = text_of(&browser, "#no-output").await.unwrap_or_default();
        assert!(discarded.contains("Discarded: output:"), "the output's discard reason: {discarded}");
        // The image has loaded (its natural size is known), so the screenshot shows it.
        eventually("the source image to load", || async {
            let loaded = browser.execute("return document.querySelector('[data-figure=source] img').naturalWidth", vec![]).await.ok()?;
            loaded.as_u64().filter(|width| *width > 0)
        })
        .await;
        screenshot(&browser, "job.png").await;
        assert_no_console_errors(&browser, "job page").await;

        // Regenerate the QA failure: queued again with reseed 1.
        click(&browser, "#regenerate", "a regenerate button on the QA failure").await;
        let header = eventually("the regenerated job to show reseed 1", || async {
            let text = text_of(&browser, "main p").await?;
            text.contains("reseed 1").then_some(text)
        })
        .await;
        farm.log(&format!("regenerated: {header}"));

        // The workers page lists both workers.
        browser.goto(&format!("{base}/#/workers")).await.unwrap();
        for worker in ["w1", "w2"] {
            let row = format!("[data-worker=\"{worker}\"]");
            eventually("the workers on the workers page", || async { text_of(&browser, &row).await }).await;
        }
        screenshot(&browser, "workers.png").await;
        assert_no_console_errors(&browser, "workers page").await;
        browser.close().await.unwrap();
    });
}

#[test]
fn the_same_pages_work_over_embedded_mode() {
    let _serial = support::serial();
    let dir = tempfile::Builder::new().prefix("acufarm-browser-embedded-").tempdir().unwrap();
    let data = Dataset::generate(&Backend::Fs, dir.path(), "embedded", &["M_Asher_N_HD"], &(1..=4).collect::<Vec<_>>());
    let run = "embedded-dashboard";
    let spec = data.write_spec("spec.toml", run, |s| s);
    let state = dir.path().join("state");
    let port = free_port();
    let mut cmd = Command::new(support::BIN);
    cmd.args(["run", spec.to_str().unwrap(), "--bundle"])
        .arg(support::bundle("fc"))
        .args(["--state-dir", state.to_str().unwrap(), "--quiet", "--dashboard", &format!("127.0.0.1:{port}"), "--keep-dashboard"])
        .env("ACUFARM_HOME", support::acufarm_home())
        .env("ACUFARM_LOG", "warn");
    let mut proc = Proc::spawn("embedded", cmd, dir.path());
    proc.wait_for_line("the dashboard stays up at", WAIT).unwrap_or_else(|e| panic!("the embedded run did not finish: {e}\n{}", proc.tail(40)));
    let token = std::fs::read_to_string(state.join("dashboard.token")).unwrap();
    let driver = Driver::start();
    block_on(async {
        let browser = driver.browser().await;
        sign_in(&browser, &format!("http://127.0.0.1:{port}/"), token.trim()).await;
        let cell = format!("[data-progress=\"{run}\"]");
        let done = eventually("the embedded run on the runs page", || async { progress(&text_of(&browser, &cell).await?) }).await;
        assert_eq!(done, (4, 4));
        browser.goto(&format!("http://127.0.0.1:{port}/#/run/{run}")).await.unwrap();
        eventually("the shard grid", || async { attr_of(&browser, "[data-shard=\"M_Asher_N_HD\"]", "data-state").await.filter(|s| s == "succeeded") }).await;
        browser.goto(&format!("http://127.0.0.1:{port}/#/jobs/{run}")).await.unwrap();
        click(&browser, "#jobs tbody a", "a job in the listing").await;
        browser.wait().at_most(WAIT).for_element(Locator::Css("[data-figure=output] img")).await.expect("the output of a succeeded job");
        let notice = text_of(&browser, "#no-qa").await.unwrap_or_default();
        assert!(notice.contains("add [qa]"), "a run without [qa] says how to get landmarks: {notice}");
        assert_no_console_errors(&browser, "embedded job page").await;
        browser.close().await.unwrap();
    });
    proc.signal("INT");
    assert!(proc.wait_exit(Duration::from_secs(60)).is_some(), "Ctrl-C stops the dashboard");
}

#[test]
fn a_page_on_one_replica_follows_work_done_through_another_and_its_session_works_on_both() {
    let _serial = support::serial();
    let dir = tempfile::Builder::new().prefix("acufarm-browser-replicas-").tempdir().unwrap();
    let data = Dataset::generate(&Backend::Fs, dir.path(), "replicas", &["M_Asher_N_HD", "F_Grace_N_HA"], &(1..=4).collect::<Vec<_>>());
    let n = data.expected.len() as u64;
    let run = "replicated-page";
    let spec = data.write_spec("spec.toml", run, |s| s);
    // Replicas share the session key, so a cookie signed by one opens the other.
    let mut farm = Farm::start(vec![("ACUFARM_SESSION_KEY".into(), "replicas-share-this-session-key-0123456789".into())], FAST);
    farm.submit(&spec);
    let replica = farm.start_replica();
    let replica_http = format!("http://127.0.0.1:{}", farm.last_http_port);
    let driver = Driver::start();
    block_on(async {
        let browser = driver.browser().await;
        sign_in(&browser, &format!("{}/", farm.http_url()), &farm.token).await;
        let cell = format!("[data-progress=\"{run}\"]");
        assert_eq!(eventually("the run on replica A's page", || async { progress(&text_of(&browser, &cell).await?) }).await, (0, n));
        // The only worker talks to replica B; the page on A follows live (Redis pub/sub).
        let mut worker = farm.spawn_worker_to(&replica, "wb", "fc", 2, &farm.token, &[]);
        worker.wait_for_line("acufarm worker: registered as", WAIT).expect("the worker registers with replica B");
        eventually("replica A's page to show the jobs B completed", || async {
            progress(&text_of(&browser, &cell).await?).filter(|(done, total)| done == total)
        })
        .await;
        assert_no_console_errors(&browser, "runs page of replica A").await;
        // The cookie A signed is accepted by B: its pages open without signing in.
        browser.goto(&format!("{replica_http}/")).await.unwrap();
        browser.wait().at_most(WAIT).for_element(Locator::Css("#runs")).await.expect("replica B accepts replica A's session");
        assert!(browser.find(Locator::Css("#signin")).await.is_err(), "no sign-in asked on B");
        assert_no_console_errors(&browser, "runs page of replica B").await;
        browser.close().await.unwrap();
        worker.kill9();
    });
}
