//! Malformed and hostile topologies (tests/corpus/topologies/, written by
//! tests/corpus/generate.py from the reference topology): each one is answered by
//! `tiernet validate` with its expected `FILE:LINE:COL: error[RULE]` (exit 1) or as
//! unreadable (exit 2), quickly, within bounded memory and without a panic; and an agent
//! given one changes nothing on its gateway.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

const TODAY: &str = "2026-06-01";
/// Per file; the slowest (a 1 MB line, a 100,000-character name) take about 3 s in a debug build.
const DEADLINE: Duration = Duration::from_secs(20);
/// Address space for one `tiernet validate`, in KiB: an alias bomb that expanded would not fit.
const MEMORY_KIB: u64 = 2 * 1024 * 1024;

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/topologies")
}

#[derive(Debug, Clone, PartialEq)]
enum Expect {
    /// Exit 1 and this `LINE:COL: error[RULE]` after the file name.
    Invalid(String),
    /// Exit 2: the file cannot be read as a topology.
    Unreadable,
}

/// The expectation: `FILE.expect`, else the file's first line `# expect: ...`.
fn expectation(path: &Path) -> Result<Expect, String> {
    let sidecar = PathBuf::from(format!("{}.expect", path.display()));
    let line = if sidecar.exists() {
        let text = std::fs::read_to_string(&sidecar).map_err(|e| e.to_string())?;
        text.lines().next().unwrap_or_default().to_string()
    } else {
        let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
        let first = bytes.split(|&b| b == b'\n').next().unwrap_or_default();
        let first = String::from_utf8_lossy(first).into_owned();
        first
            .strip_prefix("# ")
            .ok_or("no '# expect:' first line and no .expect sidecar")?
            .to_string()
    };
    let spec = line
        .trim_end_matches('\r')
        .strip_prefix("expect: ")
        .ok_or_else(|| format!("malformed expectation {line:?}"))?
        .trim();
    if spec == "unreadable" {
        return Ok(Expect::Unreadable);
    }
    let (pos, diag) = spec
        .split_once(' ')
        .ok_or_else(|| format!("expected 'LINE:COL error[RULE]', found {spec:?}"))?;
    let (l, c) = pos.split_once(':').ok_or("no LINE:COL")?;
    if l.parse::<u32>().is_err() || c.parse::<u32>().is_err() || !diag.starts_with("error[") {
        return Err(format!("expected 'LINE:COL error[RULE]', found {spec:?}"));
    }
    Ok(Expect::Invalid(format!("{pos}: {diag}")))
}

fn corpus() -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(corpus_dir())
        .expect("tests/corpus/topologies exists")
        .map(|e| e.expect("readable directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    paths.sort();
    paths
}

/// Runs `tiernet validate FILE` under an address-space limit and a deadline; output goes to
/// files so that thousands of diagnostics cannot block the child on a full pipe.
fn validate(path: &Path) -> (Option<ExitStatus>, String, Duration) {
    let out = tempfile::NamedTempFile::new().expect("temp file");
    let script = format!("ulimit -v {MEMORY_KIB}; exec \"$0\" \"$@\"");
    let mut child = Command::new("sh")
        .args(["-c", &script, env!("CARGO_BIN_EXE_tiernet")])
        .args(["validate", "--today", TODAY])
        .arg(path)
        .stdin(Stdio::null())
        .stdout(out.reopen().expect("reopen"))
        .stderr(out.reopen().expect("reopen"))
        .spawn()
        .expect("tiernet runs");
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break Some(s);
        }
        if start.elapsed() > DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let elapsed = start.elapsed();
    let text = String::from_utf8_lossy(&std::fs::read(out.path()).unwrap_or_default()).into_owned();
    (status, text, elapsed)
}

/// What is wrong with one file's answer, if anything.
fn judge(path: &Path) -> Option<String> {
    let expect = match expectation(path) {
        Ok(e) => e,
        Err(why) => return Some(why),
    };
    let (status, output, elapsed) = validate(path);
    let Some(status) = status else {
        return Some(format!("no answer within {DEADLINE:?}"));
    };
    let tail: String = output.chars().take(600).collect();
    if output.contains("panicked") || status.code() == Some(101) {
        return Some(format!("panicked ({status}):\n{tail}"));
    }
    let file = path.display().to_string();
    let (code, wanted) = match &expect {
        Expect::Invalid(diag) => (1, format!("{file}:{diag}")),
        Expect::Unreadable => (2, format!("{file}: cannot read topology")),
    };
    if status.code() != Some(code) {
        return Some(format!(
            "exit {status} after {elapsed:?}, expected {code}:\n{tail}"
        ));
    }
    // A diagnostic starts its line; the unreadable message is prefixed with `tiernet: `.
    let found = match expect {
        Expect::Invalid(_) => output.lines().any(|l| l.starts_with(&wanted)),
        Expect::Unreadable => output.contains(&wanted),
    };
    if !found {
        return Some(format!("no line starting {wanted:?} in:\n{tail}"));
    }
    None
}

#[test]
fn every_malformed_topology_is_answered_with_its_error() {
    let paths = corpus();
    assert!(
        paths.len() >= 120,
        "the corpus has only {} topologies",
        paths.len()
    );
    // Two workers: the machine this runs on in CI has two cores.
    let (even, odd): (Vec<_>, Vec<_>) = paths.iter().enumerate().partition(|(i, _)| i % 2 == 0);
    let failures: Vec<String> = std::thread::scope(|s| {
        [even, odd]
            .map(|half| {
                s.spawn(move || {
                    half.into_iter()
                        .filter_map(|(_, p)| judge(p).map(|why| format!("{}: {why}", p.display())))
                        .collect::<Vec<_>>()
                })
            })
            .into_iter()
            .flat_map(|h| h.join().expect("worker"))
            .collect()
    });
    assert!(
        failures.is_empty(),
        "{} of {} corpus files were not answered as expected:\n\n{}",
        failures.len(),
        paths.len(),
        failures.join("\n\n")
    );
}

#[test]
fn expectations_are_read_as_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let f = dir.path().join("x.yaml");
    std::fs::write(&f, "# expect: 12:7 error[overlap]\r\nversion: 1\n").expect("write");
    assert_eq!(
        expectation(&f),
        Ok(Expect::Invalid("12:7: error[overlap]".into()))
    );
    std::fs::write(&f, "# expect: 12 overlap\n").expect("write");
    assert!(expectation(&f).is_err());
    std::fs::write(&f, b"\xff\xfe").expect("write");
    std::fs::write(dir.path().join("x.yaml.expect"), "expect: unreadable\n").expect("write");
    assert_eq!(expectation(&f), Ok(Expect::Unreadable));
}

/// A wrong expectation must fail the judgement (the test is not vacuous).
#[test]
fn a_wrong_expectation_is_caught() {
    let dir = tempfile::tempdir().expect("tempdir");
    let real = corpus_dir().join("overlap-equal.yaml");
    let text = std::fs::read_to_string(&real).expect("corpus file");
    assert!(judge(&real).is_none(), "{:?}", judge(&real));
    let (first, rest) = text.split_once('\n').expect("two lines");
    let wrong = first.replace("error[overlap]", "error[vlan-range]");
    let f = dir.path().join("wrong-rule.yaml");
    std::fs::write(&f, format!("{wrong}\n{rest}")).expect("write");
    assert!(judge(&f).is_some());
    let f = dir.path().join("wrong-line.yaml");
    let moved = first.replacen(':', "1:", 1);
    std::fs::write(&f, format!("{moved}\n{rest}")).expect("write");
    assert!(judge(&f).is_some());
}

// ------------------------------------------------------------------ no state change

fn run(args: &[&str]) -> Output {
    Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("running {args:?}: {e}"))
}

fn ok(args: &[&str]) -> String {
    let out = run(args);
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A namespace with gw-core's ports, removed on drop (also on panic).
struct Gateway {
    ns: String,
    dir: tempfile::TempDir,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = run(&["ip", "netns", "del", &self.ns]);
    }
}

const CORE_PORTS: &[&str] = &[
    "seg110", "seg210", "seg310", "seg320", "eth3", "tr900", "eth0",
];

impl Gateway {
    /// None where namespaces cannot be made (not root): the test says so and passes.
    fn new() -> Option<Gateway> {
        let ns = format!("tnhostile-{}", std::process::id());
        let _ = run(&["ip", "netns", "del", &ns]);
        if !run(&["ip", "netns", "add", &ns]).status.success() {
            return None;
        }
        let gw = Gateway {
            ns,
            dir: tempfile::tempdir().expect("tempdir"),
        };
        for (i, port) in CORE_PORTS.iter().enumerate() {
            let peer = format!("peer{i}");
            ok(&[
                "ip", "-n", &gw.ns, "link", "add", port, "type", "veth", "peer", "name", &peer,
            ]);
            ok(&["ip", "-n", &gw.ns, "link", "set", &peer, "up"]);
        }
        Some(gw)
    }

    fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn agent_once(&self, topology: &Path) -> Output {
        let state = self.state_dir();
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.ns,
                env!("CARGO_BIN_EXE_tiernet-agent"),
            ])
            .args(["--gateway", "gw-core", "--once", "--today", TODAY])
            .arg("--state-dir")
            .arg(&state)
            .arg("--topology")
            .arg(topology)
            .output()
            .expect("agent runs")
    }

    /// Everything an agent could change: the ruleset, links, addresses, routes, its state files.
    fn snapshot(&self) -> String {
        let mut s = String::new();
        for args in [
            &["nft", "list", "ruleset"][..],
            &["ip", "-d", "link", "show"],
            // IPv4 only: the kernel adds IPv6 link-local addresses and routes on its own time.
            &["ip", "-4", "addr", "show"],
            &["ip", "-4", "route", "show", "table", "all"],
            &["ip", "-6", "route", "show", "table", "all", "proto", "201"],
            &["sysctl", "net.ipv4.ip_forward"],
        ] {
            let mut full = vec!["ip", "netns", "exec", &self.ns];
            full.extend_from_slice(args);
            s += &ok(&full);
        }
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.state_dir())
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        files.sort();
        for f in files {
            s += &format!("== {}\n", f.display());
            s += &String::from_utf8_lossy(&std::fs::read(&f).unwrap_or_default());
        }
        s
    }
}

/// The reference topology with untagged ports (no 802.1Q in a namespace), as tests/agent.rs does.
fn untagged_reference() -> String {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("topologies/clinical-research.yaml"),
    )
    .expect("reference topology");
    let (topo, diags) = tiernet::topology::parse(&text);
    assert!(diags.is_empty(), "{diags:?}");
    tiernet::lab::rewrite::untag(&text, &topo.expect("parsed"))
        .expect("untag")
        .0
}

/// A sample across the kinds: syntax, hostile bytes, types, addressing, the tier rules.
const SAMPLE: &[&str] = &[
    "syntax-unclosed-bracket.yaml",
    "alias-bomb.yaml",
    "multi-document.yaml",
    "nul-in-plain.yaml",
    "latin1-description.yaml",
    "empty.yaml",
    "unknown-flow-action.yaml",
    "overlap-uplink.yaml",
    "up-database.yaml",
    "approval-missing-export.yaml",
    "nesting-compact-deep.yaml",
];

#[test]
fn an_agent_given_a_malformed_topology_changes_nothing() {
    let Some(gw) = Gateway::new() else {
        eprintln!("skipped: cannot create a network namespace (needs root)");
        return;
    };
    let good = gw.dir.path().join("good.yaml");
    std::fs::write(&good, untagged_reference()).expect("write topology");
    let out = gw.agent_once(&good);
    assert!(
        out.status.success(),
        "the good topology does not apply:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Let the kernel finish what the apply started (carrier, DAD) before the first picture.
    std::thread::sleep(Duration::from_millis(500));
    let before = gw.snapshot();
    assert!(
        before.contains("table inet tiernet"),
        "no tiernet table after applying:\n{before}"
    );
    for name in SAMPLE {
        let path = corpus_dir().join(name);
        let expect = expectation(&path).expect("expectation");
        let out = gw.agent_once(&path);
        let log = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && out.status.code() != Some(101),
            "{name}: agent exited {} on a malformed topology:\n{log}",
            out.status
        );
        assert!(!log.contains("panicked"), "{name}: agent panicked:\n{log}");
        let wanted = match &expect {
            Expect::Invalid(diag) => format!("{}:{diag}", path.display()),
            Expect::Unreadable => "cannot read topology".to_string(),
        };
        assert!(
            log.contains(&wanted),
            "{name}: the agent's error does not name {wanted:?}:\n{log}"
        );
        let after = gw.snapshot();
        assert!(
            after == before,
            "{name}: the gateway changed:\n{}",
            similar::TextDiff::from_lines(&before, &after).unified_diff()
        );
    }
}
