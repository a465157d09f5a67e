//! A real browser for the tests: Debian's Chromium (`/usr/bin/chromium`,
//! `scripts/test.sh` installs it), headless, run once per look.
//!
//! Two of the browser's own flags are all the tests need, so there is no
//! WebDriver and no DevTools client to keep in step with the browser:
//! `--dump-dom` prints the page as its scripts left it, and `--screenshot`
//! draws it. `--virtual-time-budget` lets the page's scripts run (its
//! timers, its requests to the job, which pause virtual time while they are
//! in flight) before either happens.
//!
//! A missing browser fails the test with what to install; it never skips.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long one browser run may take.
const RUN_DEADLINE: Duration = Duration::from_secs(90);
/// Virtual time the page's scripts get before the DOM is read: a few of
/// the page's one-second polls.
const VIRTUAL_TIME_MS: &str = "3000";

pub struct Chromium {
    bin: PathBuf,
    dir: tempfile::TempDir,
}

impl Chromium {
    /// `$CHROMIUM`, else `chromium` on the PATH.
    pub fn find() -> Chromium {
        let bin = std::env::var_os("CHROMIUM")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("chromium"));
        let version = Command::new(&bin).arg("--version").output();
        match version {
            Ok(out) if out.status.success() => Chromium {
                bin,
                dir: tempfile::tempdir().unwrap(),
            },
            other => panic!(
                "no browser: `{} --version` gave {other:?}. Install Debian's Chromium \
                 (apt-get install chromium; scripts/test.sh does) or set CHROMIUM to its path",
                bin.display()
            ),
        }
    }

    /// The page at `url` after its scripts ran, as HTML.
    pub fn dom(&self, url: &str) -> String {
        self.run(&["--dump-dom", url])
    }

    /// A PNG of the page at `url`, `width` x `height` pixels, into `path`.
    pub fn screenshot(&self, url: &str, path: &Path, width: u32, height: u32) {
        let _ = std::fs::remove_file(path);
        let shot = format!("--screenshot={}", path.display());
        let size = format!("--window-size={width},{height}");
        self.run(&[&shot, &size, "--hide-scrollbars", url]);
        assert!(
            path.exists(),
            "chromium wrote no screenshot to {}",
            path.display()
        );
    }

    /// Runs the browser once with `args`; returns what it printed on
    /// stdout. Fails the test if it fails or hangs.
    fn run(&self, args: &[&str]) -> String {
        let out = self.dir.path().join("stdout");
        let err = self.dir.path().join("stderr");
        let profile = format!(
            "--user-data-dir={}",
            self.dir.path().join("profile").display()
        );
        let budget = format!("--virtual-time-budget={VIRTUAL_TIME_MS}");
        // As root there is no sandbox; without the network flags Chromium
        // keeps trying to reach hosts a closed network refuses.
        let mut child = Command::new(&self.bin)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                &profile,
                &budget,
            ])
            .args(args)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.bin.display()));
        let deadline = Instant::now() + RUN_DEADLINE;
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "chromium {args:?} did not finish within {RUN_DEADLINE:?}; stderr:\n{}",
                    std::fs::read_to_string(&err).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(
            status.success(),
            "chromium {args:?} failed ({status}); stderr:\n{}",
            std::fs::read_to_string(&err).unwrap_or_default()
        );
        std::fs::read_to_string(&out).unwrap()
    }
}

/// The rows of the table with id `id` in a DOM dump: each row's opening
/// tag attributes and its cells as text.
pub fn table_rows(dom: &str, id: &str) -> Vec<(String, Vec<String>)> {
    let open = format!("<table id=\"{id}\"");
    let start = dom
        .find(&open)
        .unwrap_or_else(|| panic!("no table #{id} in the page:\n{dom}"));
    let table = &dom[start..];
    let table = &table[..table.find("</table>").expect("a closed table")];
    let body = &table[table.find("<tbody").expect("a table body")..];
    body.split("<tr")
        .skip(1)
        .map(|tr| {
            let (attrs, rest) = tr.split_once('>').unwrap();
            let cells = rest
                .split("<td")
                .skip(1)
                .map(|td| {
                    let inner = td.split_once('>').unwrap().1;
                    text_of(inner.split("</td>").next().unwrap())
                })
                .collect();
            (attrs.to_string(), cells)
        })
        .collect()
}

/// The text of the element with id `id` (no nested elements expected).
pub fn text_by_id(dom: &str, id: &str) -> String {
    let at = dom
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no element #{id} in the page"));
    let inner = dom[at..].split_once('>').unwrap().1;
    text_of(inner.split('<').next().unwrap())
}

/// The opening tag of the element with id `id`, `<` and `>` left out.
pub fn tag_by_id<'a>(dom: &'a str, id: &str) -> &'a str {
    let at = dom
        .find(&format!(" id=\"{id}\""))
        .unwrap_or_else(|| panic!("no element #{id} in the page"));
    let open = dom[..at].rfind('<').unwrap();
    let close = at + dom[at..].find('>').unwrap();
    &dom[open + 1..close]
}

/// The value of attribute `name` in a tag's attributes.
pub fn attr(attrs: &str, name: &str) -> Option<String> {
    let at = attrs.find(&format!(" {name}=\""))? + name.len() + 3;
    Some(attrs[at..].split('"').next()?.to_string())
}

/// Markup removed, the entities the page can produce decoded.
fn text_of(html: &str) -> String {
    let mut out = String::new();
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' => in_tag = false,
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    out.replace("&nbsp;", " ")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&amp;", "&")
        .trim()
        .to_string()
}
