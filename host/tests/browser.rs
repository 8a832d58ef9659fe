//! The chat page in a real browser: headless Chromium (Debian's `chromium`),
//! driven through `chromedriver` (`chromium-driver`) by fantoccini, against
//! the real `roomhost` binary with a fresh redb file. Each browser session is
//! one user. The tests look at what a person sees: the messages in each log,
//! the member list, the reconnect banner, where the log is scrolled.
//!
//! Screenshots of every step land in
//! `<target>/tmp/browser/<test name>/NN-<user>-<step>.png` (the folder is
//! emptied at the start of its test), beside `chromedriver.log`.
//!
//! Without `/usr/bin/chromium` and `/usr/bin/chromedriver` each test says
//! `skipped: install chromium chromium-driver` and passes, unless
//! `ROOMHOST_REQUIRE_BROWSER=1` (as `.ci/run` sets), when it fails. The tests
//! take turns (one lock): two Chromiums at a time are enough for a 2-core
//! machine.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;
use fantoccini::{Client as WebDriver, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde::Deserialize;
use serde_json::{Value, json};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// How long any one thing a user waits for may take (a shared 2-core
/// machine, builds running beside the test).
const UI_WAIT: Duration = Duration::from_secs(30);

/// The tests take turns: each runs two Chromiums.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Runs `test` with the browser, or says why not: a skip where no browser is
/// installed, a failure if `ROOMHOST_REQUIRE_BROWSER=1`.
fn with_browser<F>(name: &str, test: impl FnOnce(Browser) -> F)
where
    F: std::future::Future<Output = ()>,
{
    let missing: Vec<&str> = [CHROMIUM, CHROMEDRIVER]
        .into_iter()
        .filter(|p| !Path::new(p).exists())
        .collect();
    if !missing.is_empty() {
        let why = format!(
            "install chromium chromium-driver ({} missing; apt-get install chromium chromium-driver)",
            missing.join(" and ")
        );
        if std::env::var("ROOMHOST_REQUIRE_BROWSER").is_ok_and(|v| v == "1") {
            panic!("ROOMHOST_REQUIRE_BROWSER=1 but {why}");
        }
        // Past the test harness's capture, so that a plain `cargo test` shows it.
        let _ = writeln!(std::io::stderr(), "browser::{name}: skipped: {why}");
        return;
    }
    let _turn = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let shots = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("browser")
        .join(name);
    let _ = std::fs::remove_dir_all(&shots);
    std::fs::create_dir_all(&shots).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let driver = Driver::start(&shots);
    runtime.block_on(test(Browser {
        driver,
        shots: Shots {
            dir: shots,
            next: AtomicUsize::new(1),
        },
    }));
}

/// `chromedriver` on a free 127.0.0.1 port, in its own process group so
/// that dropping it ends it and every Chromium it started.
struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    fn start(dir: &Path) -> Driver {
        let port = free_port();
        let log = std::fs::File::create(dir.join("chromedriver.log")).unwrap();
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .process_group(0)
            .spawn()
            .expect("start chromedriver");
        let mut driver = Driver {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        // Ready when it answers /status with ready: true.
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let deadline = Instant::now() + UI_WAIT;
        loop {
            if let Ok(Some(status)) = driver.child.try_wait() {
                panic!(
                    "chromedriver exited ({status}): {}",
                    std::fs::read_to_string(dir.join("chromedriver.log")).unwrap_or_default()
                );
            }
            if std::net::TcpStream::connect(addr).is_ok() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver did not listen on {addr} within {UI_WAIT:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        driver
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // The whole group: chromedriver and any Chromium left behind by a
        // failing test.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free port on 127.0.0.1 (the kernel's pick, released for the taker).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Numbered screenshots of one test.
struct Shots {
    dir: PathBuf,
    next: AtomicUsize,
}

/// What one test has: the driver and its screenshot folder.
struct Browser {
    driver: Driver,
    shots: Shots,
}

impl Browser {
    /// Opens a fresh Chromium (its own profile) for user `name`.
    async fn user<'a>(&'a self, name: &str, profiles: &Path) -> User<'a> {
        let profile = profiles.join(format!("profile-{name}"));
        std::fs::create_dir_all(&profile).unwrap();
        let caps = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-quic",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--disable-dev-shm-usage",
                    "--window-size=1000,700",
                    format!("--user-data-dir={}", profile.display()),
                ],
            },
        });
        let Value::Object(caps) = caps else {
            unreachable!()
        };
        let mut connect = ClientBuilder::new(HttpConnector::new());
        connect.capabilities(caps);
        let deadline = Instant::now() + UI_WAIT;
        let wd = loop {
            match connect.connect(&self.driver.url).await {
                Ok(wd) => break wd,
                Err(e) if Instant::now() < deadline => {
                    eprintln!("new session for {name} failed ({e}); again");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => panic!("no browser session for {name}: {e}"),
            }
        };
        User {
            name: name.to_string(),
            wd,
            shots: &self.shots,
        }
    }
}

/// What a user sees of the page, read in one go.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Seen {
    /// Which of the three views shows: `name-view`, `room-view`, `chat-view`.
    view: String,
    status: String,
    title: String,
    private_badge: bool,
    /// The reconnect banner's text, when it shows.
    banner: Option<String>,
    attempt: u32,
    delay_ms: u64,
    roster: Vec<String>,
    roster_count: String,
    /// Chat messages in the log, top to bottom: (name, text).
    messages: Vec<(String, String)>,
    /// Every line of the log, messages as their text, others as `* text`.
    lines: Vec<String>,
    /// The "new messages" button's text, when it shows.
    jump: Option<String>,
    scroll_top: f64,
    scroll_max: f64,
    /// Whether the last message is inside the log's visible area.
    last_in_view: bool,
    /// Set by the test; survives only as long as the page is not reloaded.
    marker: Option<String>,
    hash: String,
}

impl Seen {
    fn texts(&self) -> Vec<&str> {
        self.messages.iter().map(|(_, t)| t.as_str()).collect()
    }

    fn has(&self, name: &str, text: &str) -> bool {
        self.messages.iter().any(|(n, t)| n == name && t == text)
    }

    fn roster_sorted(&self) -> Vec<String> {
        let mut r = self.roster.clone();
        r.sort();
        r
    }
}

const SEEN_JS: &str = r#"
const $ = (id) => document.getElementById(id);
const shown = (e) => !!e && !e.hidden && e.getClientRects().length > 0;
const log = $('chat-log');
const msgs = [...log.querySelectorAll('.msg')];
const last = msgs[msgs.length - 1];
let lastInView = false;
if (last) {
  const a = last.getBoundingClientRect(), b = log.getBoundingClientRect();
  lastInView = a.top >= b.top - 1 && a.bottom <= b.bottom + 1;
}
return {
  view: ['name-view', 'room-view', 'chat-view'].find((v) => !$(v).hidden) || '',
  status: $('status').textContent,
  title: $('room-title').textContent,
  privateBadge: shown($('private-badge')),
  banner: shown($('banner')) ? $('banner-text').textContent + $('banner-wait').textContent : null,
  attempt: Number($('banner').dataset.attempt || 0),
  delayMs: Number($('banner').dataset.delayMs || 0),
  roster: [...document.querySelectorAll('#roster li')].map((li) => li.textContent),
  rosterCount: $('roster-count').textContent,
  messages: msgs.map((m) => [m.querySelector('.name').textContent, m.querySelector('.text').textContent]),
  lines: [...log.children].map((d) => d.classList.contains('msg')
    ? d.querySelector('.text').textContent : '* ' + d.textContent),
  jump: shown($('jump-new')) ? $('jump-new').textContent : null,
  scrollTop: log.scrollTop,
  scrollMax: log.scrollHeight - log.clientHeight,
  lastInView,
  marker: window.__testMarker || null,
  hash: location.hash,
};
"#;

/// One user: a Chromium with the chat page.
struct User<'a> {
    name: String,
    wd: WebDriver,
    shots: &'a Shots,
}

impl User<'_> {
    async fn seen(&self) -> Seen {
        let v = self
            .wd
            .execute(SEEN_JS, vec![])
            .await
            .unwrap_or_else(|e| panic!("{}: reading the page: {e}", self.name));
        serde_json::from_value(v).unwrap()
    }

    /// Polls the page until `cond` holds, at most [`UI_WAIT`]; on timeout
    /// fails with `what` and the page as last seen (and a screenshot).
    async fn wait(&self, what: &str, cond: impl Fn(&Seen) -> bool) -> Seen {
        self.wait_within(UI_WAIT, what, cond).await
    }

    async fn wait_within(
        &self,
        within: Duration,
        what: &str,
        cond: impl Fn(&Seen) -> bool,
    ) -> Seen {
        let deadline = Instant::now() + within;
        loop {
            let seen = self.seen().await;
            if cond(&seen) {
                return seen;
            }
            if Instant::now() >= deadline {
                self.shot(&format!("timeout-{}", slug(what))).await;
                panic!(
                    "{}: not within {within:?}: {what}; the page shows {seen:#?}",
                    self.name
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Saves a screenshot as `NN-<user>-<step>.png`.
    async fn shot(&self, step: &str) {
        let n = self.shots.next.fetch_add(1, Ordering::SeqCst);
        let png = self
            .wd
            .screenshot()
            .await
            .unwrap_or_else(|e| panic!("{}: screenshot: {e}", self.name));
        assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
        let file = self
            .shots
            .dir
            .join(format!("{n:02}-{}-{step}.png", self.name));
        std::fs::write(&file, png).unwrap();
    }

    async fn type_into(&self, css: &str, text: &str) {
        let input = self.wd.find(Locator::Css(css)).await.unwrap();
        input.clear().await.unwrap();
        input.send_keys(text).await.unwrap();
    }

    async fn click(&self, css: &str) {
        self.wd
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{}: no {css}: {e}", self.name))
            .click()
            .await
            .unwrap_or_else(|e| panic!("{}: clicking {css}: {e}", self.name));
    }

    /// Opens `url`, gives the name and waits for the room chooser (or, with
    /// a room in the URL, for the room).
    async fn open(&self, url: &str) {
        self.wd.goto(url).await.unwrap();
        self.wait("the name form", |s| s.view == "name-view").await;
        self.type_into("#name-input", &self.name).await;
        self.click("#name-submit").await;
    }

    /// Opens the page at `base`, names itself and joins public room `room`.
    async fn join(&self, base: &str, room: &str) -> Seen {
        self.open(base).await;
        self.wait("the room form", |s| s.view == "room-view").await;
        self.type_into("#room-input", room).await;
        self.click("#room-join").await;
        self.wait_connected(room).await
    }

    async fn wait_connected(&self, room: &str) -> Seen {
        let name = self.name.clone();
        self.wait(&format!("connected to room {room}"), |s| {
            s.view == "chat-view"
                && s.title == room
                && s.status == "connected"
                && s.roster.contains(&name)
        })
        .await
    }

    /// Types `text` and sends it with Enter.
    async fn say(&self, text: &str) {
        self.type_into("#message-input", &format!("{text}\u{E007}"))
            .await;
    }

    /// Waits until `from`'s `text` is in this user's log.
    async fn wait_message(&self, from: &str, text: &str) -> Seen {
        self.wait(&format!("{from}'s message {text:?} in the log"), |s| {
            s.has(from, text)
        })
        .await
    }

    async fn wait_roster(&self, members: &[&str]) -> Seen {
        let mut want: Vec<String> = members.iter().map(|m| m.to_string()).collect();
        want.sort();
        let count = members.len().to_string();
        self.wait(&format!("the member list {want:?}"), |s| {
            s.roster_sorted() == want && s.roster_count == count
        })
        .await
    }

    async fn close(self) {
        let _ = self.wd.close().await;
    }
}

fn slug(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(40)
        .collect()
}

/// The real binary, serving the default config (the chat page and rooms).
fn start_host(data: &Path, listen: &str) -> HostProcess {
    HostProcess::spawn(
        Command::new(env!("CARGO_BIN_EXE_roomhost"))
            .args(["serve", "--listen", listen, "--data"])
            .arg(data),
    )
}

/// Stops the host as a supervisor would (SIGTERM) and waits for it.
fn stop_host(host: &mut HostProcess) {
    let status = Command::new("kill")
        .args(["-TERM", &host.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -TERM");
    let exit = host.wait_exit(UI_WAIT);
    assert!(exit.is_some(), "the host did not stop within {UI_WAIT:?}");
}

#[test]
fn two_users_join_a_room_and_talk() {
    with_browser("two_users_join_a_room_and_talk", |b| async move {
        let dir = tempfile::tempdir().unwrap();
        let host = start_host(&dir.path().join("chat.redb"), "127.0.0.1:0");
        let base = format!("http://{}/", host.addr);

        let alice = b.user("alice", dir.path()).await;
        let bob = b.user("bob", dir.path()).await;
        alice.wd.goto(&base).await.unwrap();
        alice.wait("the name form", |s| s.view == "name-view").await;
        alice.shot("page").await;
        // The page is one self-contained file: nothing loaded from elsewhere.
        let loaded = alice
            .wd
            .execute(
                "return performance.getEntriesByType('resource').map((e) => e.name);",
                vec![],
            )
            .await
            .unwrap();
        let foreign: Vec<&Value> = loaded
            .as_array()
            .unwrap()
            .iter()
            .filter(|u| !u.as_str().is_some_and(|u| u.starts_with(&base)))
            .collect();
        assert!(foreign.is_empty(), "loaded from elsewhere: {foreign:?}");
        let seen = alice.join(&base, "lobby").await;
        assert_eq!(seen.roster, ["alice"], "alone in the room");
        assert!(seen.messages.is_empty(), "a new room has no history");
        alice.shot("joined").await;

        bob.join(&base, "lobby").await;
        alice.wait_roster(&["alice", "bob"]).await;
        bob.wait_roster(&["alice", "bob"]).await;
        alice
            .wait("bob's arrival announced", |s| {
                s.lines.iter().any(|l| l == "* bob joined.")
            })
            .await;

        alice.say("hello bob").await;
        let seen = bob.wait_message("alice", "hello bob").await;
        assert!(
            seen.last_in_view,
            "bob sees the new message without scrolling"
        );
        bob.say("hi alice, nice page").await;
        let seen = alice.wait_message("bob", "hi alice, nice page").await;
        assert_eq!(seen.texts(), ["hello bob", "hi alice, nice page"]);
        let seen = bob.wait("both messages", |s| s.messages.len() == 2).await;
        assert_eq!(
            seen.messages,
            [
                ("alice".to_string(), "hello bob".to_string()),
                ("bob".to_string(), "hi alice, nice page".to_string())
            ],
            "one order for everyone"
        );
        alice.shot("talked").await;
        bob.shot("talked").await;
        alice.close().await;
        bob.close().await;
    });
}

#[test]
fn a_reload_shows_the_history_in_order() {
    with_browser("a_reload_shows_the_history_in_order", |b| async move {
        let dir = tempfile::tempdir().unwrap();
        let host = start_host(&dir.path().join("chat.redb"), "127.0.0.1:0");
        let base = format!("http://{}/", host.addr);
        let alice = b.user("alice", dir.path()).await;
        let bob = b.user("bob", dir.path()).await;
        alice.join(&base, "history").await;
        bob.join(&base, "history").await;
        let said = [
            ("alice", "first"),
            ("bob", "second"),
            ("alice", "third"),
            ("bob", "fourth"),
        ];
        for (who, text) in said {
            let user = if who == "alice" { &alice } else { &bob };
            user.say(text).await;
            // Each waits for the other's line, so the order is the one typed.
            alice.wait_message(who, text).await;
            bob.wait_message(who, text).await;
        }
        bob.shot("before-reload").await;

        bob.wd.refresh().await.unwrap();
        // Back in the room by itself (the tab remembers the name), with what
        // was said, oldest first, above the "live" line.
        let seen = bob.wait_connected("history").await;
        assert_eq!(seen.hash, "#history");
        assert_eq!(seen.texts(), ["first", "second", "third", "fourth"]);
        let who: Vec<&str> = seen.messages.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(who, ["alice", "bob", "alice", "bob"]);
        let live = seen.lines.iter().position(|l| l == "* — live —");
        assert_eq!(
            live,
            Some(4),
            "history, then the live line: {:?}",
            seen.lines
        );
        assert!(seen.last_in_view, "the newest message shows");
        bob.wait_roster(&["alice", "bob"]).await;
        alice.wait_roster(&["alice", "bob"]).await;
        bob.shot("after-reload").await;

        // And the room goes on after the reload: someone else (from another
        // address: both browsers share 127.0.0.1's rate limit, five quick
        // messages) welcomes bob back.
        let (mut carol, _) = join_chat_at(host.addr, ip(9), "history", "carol").await;
        carol.send_json(json!({ "message": "welcome back" })).await;
        let seen = bob.wait_message("carol", "welcome back").await;
        assert!(seen.last_in_view);
        alice.close().await;
        bob.close().await;
    });
}

#[test]
fn scrolled_up_the_log_stays_put_and_offers_the_new_messages() {
    with_browser(
        "scrolled_up_the_log_stays_put_and_offers_the_new_messages",
        |b| async move {
            let dir = tempfile::tempdir().unwrap();
            let host = start_host(&dir.path().join("chat.redb"), "127.0.0.1:0");
            let base = format!("http://{}/", host.addr);
            // Sixty lines of history, from people on other addresses (each
            // address has its own rate limit).
            let mut others = Vec::new();
            for i in 0..15u8 {
                let (mut c, _) = join_chat_at(host.addr, ip(i + 1), "busy", &format!("p{i}")).await;
                for k in 0..4 {
                    c.send_json(json!({ "message": format!("old {i}.{k}") }))
                        .await;
                    c.recv_json().await; // its own broadcast: stored
                }
                others.push(c);
            }
            let alice = b.user("alice", dir.path()).await;
            let seen = alice.join(&base, "busy").await;
            assert_eq!(seen.messages.len(), 60, "the history on joining");
            assert!(seen.scroll_max > 0.0, "more history than fits");
            assert!(seen.last_in_view, "joined at the newest line");
            alice.shot("joined").await;

            // The reader scrolls back to the top and reads.
            alice
                .wd
                .execute("document.getElementById('chat-log').scrollTop = 0;", vec![])
                .await
                .unwrap();
            alice
                .wait("scrolled to the top", |s| s.scroll_top == 0.0)
                .await;
            for (n, c) in others.iter_mut().take(3).enumerate() {
                c.send_json(json!({ "message": format!("new {n}") })).await;
            }
            let seen = alice
                .wait("three new messages counted", |s| {
                    s.jump.as_deref() == Some("↓ 3 new messages")
                })
                .await;
            assert!(seen.has("p2", "new 2"), "the messages are in the log");
            assert_eq!(seen.scroll_top, 0.0, "the view stayed where the reader is");
            assert!(!seen.last_in_view);
            alice.shot("scrolled-up").await;

            alice.click("#jump-new").await;
            let seen = alice
                .wait("at the newest line after the jump", |s| {
                    s.jump.is_none() && s.last_in_view
                })
                .await;
            assert!(seen.scroll_max - seen.scroll_top < 2.0, "at the bottom");
            alice.shot("jumped").await;

            // At the bottom, the log follows new lines by itself.
            others[5]
                .send_json(json!({ "message": "at the bottom" }))
                .await;
            let seen = alice.wait_message("p5", "at the bottom").await;
            assert!(seen.last_in_view && seen.jump.is_none());
            alice.close().await;
        },
    );
}

#[test]
fn a_private_room_made_with_the_button() {
    with_browser("a_private_room_made_with_the_button", |b| async move {
        let dir = tempfile::tempdir().unwrap();
        let host = start_host(&dir.path().join("chat.redb"), "127.0.0.1:0");
        let base = format!("http://{}/", host.addr);
        let alice = b.user("alice", dir.path()).await;
        let bob = b.user("bob", dir.path()).await;

        alice.open(&base).await;
        alice.wait("the room form", |s| s.view == "room-view").await;
        alice.click("#room-create").await;
        let seen = alice
            .wait("in a private room", |s| {
                s.view == "chat-view" && s.status == "connected" && s.private_badge
            })
            .await;
        let id = seen.title.clone();
        assert!(
            id.len() == 64 && id.chars().all(|c| c.is_ascii_hexdigit()),
            "a 64-hex room id, got {id:?}"
        );
        assert_eq!(seen.hash, format!("#{id}"), "the link names the room");
        assert_eq!(seen.roster, ["alice"]);
        alice.shot("created").await;

        // Bob gets the link; his page asks only his name.
        let link = alice.wd.current_url().await.unwrap().to_string();
        bob.wd.goto(&link).await.unwrap();
        let seen = bob.wait("the name form", |s| s.view == "name-view").await;
        assert_eq!(seen.hash, format!("#{id}"));
        bob.shot("invited").await;
        bob.type_into("#name-input", "bob").await;
        bob.click("#name-submit").await;
        let seen = bob.wait_connected(&id).await;
        assert!(seen.private_badge);
        alice.wait_roster(&["alice", "bob"]).await;

        alice.say("only we can read this").await;
        bob.wait_message("alice", "only we can read this").await;
        bob.say("indeed").await;
        alice.wait_message("bob", "indeed").await;
        alice.shot("talked").await;
        bob.shot("talked").await;

        // The room is its own: a public room sees none of it.
        let history = room_history(host.addr, &id).await;
        assert_eq!(history.len(), 2);
        assert!(room_history(host.addr, "lobby").await.is_empty());
        alice.close().await;
        bob.close().await;
    });
}

#[test]
fn after_a_host_restart_the_page_reconnects_by_itself() {
    with_browser(
        "after_a_host_restart_the_page_reconnects_by_itself",
        |b| async move {
            let dir = tempfile::tempdir().unwrap();
            let data = dir.path().join("chat.redb");
            let mut host = start_host(&data, "127.0.0.1:0");
            let addr = host.addr;
            let base = format!("http://{addr}/");
            let alice = b.user("alice", dir.path()).await;
            let bob = b.user("bob", dir.path()).await;
            alice.join(&base, "restart").await;
            bob.join(&base, "restart").await;
            alice.say("before the restart").await;
            bob.wait_message("alice", "before the restart").await;
            for u in [&alice, &bob] {
                u.wd.execute("window.__testMarker = 'same page';", vec![])
                    .await
                    .unwrap();
            }

            stop_host(&mut host);
            // Both pages show the banner, and keep trying with growing waits:
            // attempt n waits between half and all of min(15 s, 2^(n-1) s).
            let mut delays = Vec::new();
            let mut counted_down = false;
            let deadline = Instant::now() + UI_WAIT;
            loop {
                let seen = alice.seen().await;
                if let Some(banner) = &seen.banner {
                    assert!(banner.starts_with("Connection lost"), "{banner}");
                    assert!(banner.contains(&format!("attempt {}", seen.attempt)));
                    assert_eq!(seen.status, "reconnecting…");
                    counted_down |= banner.contains("Reconnecting in ");
                    if !delays.iter().any(|&(a, _)| a == seen.attempt) {
                        delays.push((seen.attempt, seen.delay_ms));
                        alice
                            .shot(&format!("banner-attempt-{}", seen.attempt))
                            .await;
                    }
                }
                if seen.attempt >= 4 {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "alice: no fourth attempt within {UI_WAIT:?}: saw {delays:?}, page {seen:#?}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            assert!(counted_down, "the banner says when it tries again");
            for &(attempt, delay) in &delays {
                let ceiling = 15_000.min(1000u64 << (attempt - 1));
                assert!(
                    ceiling / 2 <= delay && delay <= ceiling,
                    "attempt {attempt} waits {delay} ms, not within [{}, {ceiling}]: {delays:?}",
                    ceiling / 2
                );
            }
            let seen = bob
                .wait("bob's banner, a second attempt", |s| {
                    s.banner.is_some() && s.attempt >= 2 && s.roster.is_empty()
                })
                .await;
            assert_eq!(seen.status, "reconnecting…");
            bob.shot("banner").await;

            // The host comes back on the same port with the same data.
            let waiting = [alice.seen().await.attempt, bob.seen().await.attempt];
            let mut host = start_host(&data, &addr.to_string());
            assert_eq!(host.addr, addr);
            for (u, waiting) in [&alice, &bob].into_iter().zip(waiting) {
                // Within the longest wait (8 s for attempt 5) and then some.
                let seen = u
                    .wait("reconnected, banner gone", |s| {
                        s.banner.is_none() && s.status == "connected"
                    })
                    .await;
                assert_eq!(seen.marker.as_deref(), Some("same page"), "not reloaded");
                let attempt = seen
                    .lines
                    .iter()
                    .find_map(|l| l.strip_prefix("* Reconnected on attempt "))
                    .and_then(|n| n.trim_end_matches('.').parse::<u32>().ok());
                assert!(
                    attempt.is_some_and(|n| n >= waiting.max(2)),
                    "says it reconnected, on the attempt it was waiting for \
                     ({waiting}) or a later one: {:?}",
                    seen.lines
                );
                assert_eq!(
                    seen.texts(),
                    ["before the restart"],
                    "the log is kept, nothing doubled"
                );
                u.shot("reconnected").await;
            }
            alice.wait_roster(&["alice", "bob"]).await;
            bob.wait_roster(&["alice", "bob"]).await;

            bob.say("after the restart").await;
            alice.wait_message("bob", "after the restart").await;
            alice.shot("talking-again").await;
            alice.close().await;
            bob.close().await;
            stop_host(&mut host);
        },
    );
}

#[test]
fn the_member_list_is_right_after_someone_leaves() {
    with_browser(
        "the_member_list_is_right_after_someone_leaves",
        |b| async move {
            let dir = tempfile::tempdir().unwrap();
            let host = start_host(&dir.path().join("chat.redb"), "127.0.0.1:0");
            let base = format!("http://{}/", host.addr);
            let alice = b.user("alice", dir.path()).await;
            let bob = b.user("bob", dir.path()).await;
            alice.join(&base, "members").await;
            bob.join(&base, "members").await;
            let (carol, _) = join_chat_at(host.addr, ip(7), "members", "carol").await;
            alice.wait_roster(&["alice", "bob", "carol"]).await;
            let seen = bob.wait_roster(&["alice", "bob", "carol"]).await;
            assert_eq!(seen.roster[0], "alice", "in the order they came");
            alice.shot("three").await;

            // Bob presses Leave: he is back at the room form, out of the list.
            bob.click("#leave").await;
            bob.wait("the room form", |s| s.view == "room-view").await;
            let seen = alice.wait_roster(&["alice", "carol"]).await;
            assert!(seen.lines.iter().any(|l| l == "* bob left."));
            alice.shot("bob-left").await;

            // Carol's connection closes.
            carol.close().await;
            alice.wait_roster(&["alice"]).await;
            alice.shot("carol-left").await;

            // Bob comes back, then closes his browser.
            bob.type_into("#room-input", "members").await;
            bob.click("#room-join").await;
            bob.wait_connected("members").await;
            alice.wait_roster(&["alice", "bob"]).await;
            bob.close().await;
            let seen = alice.wait_roster(&["alice"]).await;
            assert_eq!(
                seen.lines.iter().filter(|l| *l == "* bob left.").count(),
                2,
                "{:?}",
                seen.lines
            );
            alice.shot("alone").await;
            alice.close().await;
        },
    );
}
