//! The controller's revisions and rollout against no-op agents: real gRPC, real mutual
//! TLS and the real agent link on loopback, no dataplane (no kernel, no namespaces).

mod control_util;

use control_util::*;
use std::time::Duration;
use tiernet::agent::noop::{link_config, NoopAgent, Seen};
use tiernet::controller::Settings;
use tiernet::proto::v1::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_gives_each_gateway_its_own_state_and_status_is_green() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let ctl = Controller::start(&pki, &dir.path().join("store.db")).await;
    let (core, his) = (agent(&ctl, &pki, "gw-core"), agent(&ctl, &pki, "gw-his"));
    let mut alice = admin(&ctl, &pki, "alice").await;
    wait_connected(&mut alice, 2).await;

    let progress = apply(&mut alice, REFERENCE, Some(0)).await.expect("apply");
    assert_eq!(
        progress.last().map(|p| p.phase.as_str()),
        Some("done"),
        "{progress:?}"
    );
    assert!(progress
        .iter()
        .any(|p| p.gateway == "gw-core" && p.phase == "applied"));
    assert!(progress
        .iter()
        .any(|p| p.gateway == "gw-his" && p.phase == "applied"));
    for (a, name) in [(&core, "gw-core"), (&his, "gw-his")] {
        let seen = a.seen();
        assert_eq!(seen.received, vec![1]);
        assert_eq!(
            seen.state.map(|s| s.gateway),
            Some(name.to_string()),
            "only its own state"
        );
    }
    wait_until(Duration::from_secs(5), "status green", async || {
        states(&status(&mut alice).await)
            == [
                ("gw-core".into(), "IN_SYNC".into()),
                ("gw-his".into(), "IN_SYNC".into()),
            ]
    })
    .await;
    let h = alice
        .history(HistoryRequest { limit: 10 })
        .await
        .expect("history")
        .into_inner();
    assert_eq!(h.current_revision, 1);
    assert_eq!(h.revisions[0].status, "applied");
    assert_eq!(h.revisions[0].author, "alice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_failing_gateway_puts_every_gateway_back_on_the_previous_revision() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let ctl = Controller::start(&pki, &dir.path().join("store.db")).await;
    let (core, his) = (agent(&ctl, &pki, "gw-core"), agent(&ctl, &pki, "gw-his"));
    let mut alice = admin(&ctl, &pki, "alice").await;
    wait_connected(&mut alice, 2).await;
    apply(&mut alice, REFERENCE, None)
        .await
        .expect("first apply");
    let rev1_core = core.seen().state;

    his.fail_on(2);
    let err = apply(&mut alice, &changed_reference(), Some(1))
        .await
        .expect_err("the rollout fails");
    assert_eq!(err.code(), tonic::Code::Aborted, "{err:?}");
    assert!(err.message().contains("gw-his"), "{}", err.message());
    assert_eq!(
        core.seen().received,
        vec![1, 2, 1],
        "gw-core applied 2, then was put back on 1"
    );
    assert_eq!(core.seen().state, rev1_core);
    assert_eq!(core.seen().revision, Some(1));
    assert_eq!(his.seen().revision, Some(1));
    let h = alice
        .history(HistoryRequest { limit: 10 })
        .await
        .expect("history")
        .into_inner();
    assert_eq!(h.current_revision, 1);
    assert_eq!(h.revisions[0].status, "failed");
    assert!(
        h.revisions[0].message.contains("rolled back"),
        "{}",
        h.revisions[0].message
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_canary_stops_the_rollout_before_the_others() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let ctl = Controller::start(&pki, &dir.path().join("store.db")).await;
    let (core, his) = (agent(&ctl, &pki, "gw-core"), agent(&ctl, &pki, "gw-his"));
    let mut alice = admin(&ctl, &pki, "alice").await;
    wait_connected(&mut alice, 2).await;
    apply(&mut alice, REFERENCE, None)
        .await
        .expect("first apply");
    core.fail_on(2);
    let req = ApplyRequest {
        name: "c.yaml".into(),
        topology: changed_reference(),
        expect_revision: None,
        canary: "gw-core".into(),
    };
    let err = collect(alice.apply(req).await.expect("started").into_inner())
        .await
        .expect_err("canary fails");
    assert_eq!(err.code(), tonic::Code::Aborted);
    assert_eq!(his.seen().received, vec![1], "gw-his never saw revision 2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_refused_with_a_reason_and_change_nothing() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let ctl = Controller::start(&pki, &dir.path().join("store.db")).await;
    let (_core, _his) = (agent(&ctl, &pki, "gw-core"), agent(&ctl, &pki, "gw-his"));
    let mut alice = admin(&ctl, &pki, "alice").await;
    wait_connected(&mut alice, 2).await;
    apply(&mut alice, REFERENCE, Some(0))
        .await
        .expect("first apply");

    let stale = apply(&mut alice, &changed_reference(), Some(0))
        .await
        .expect_err("stale expect-revision");
    assert_eq!(stale.code(), tonic::Code::FailedPrecondition);
    assert!(
        stale.message().contains("current revision is 1"),
        "{}",
        stale.message()
    );

    let invalid = REFERENCE.replace("    to: vdi-gateway\n", "    to: research-db\n");
    let bad = apply(&mut alice, &invalid, None)
        .await
        .expect_err("invalid topology");
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    assert!(
        bad.message().contains("error["),
        "names the rule: {}",
        bad.message()
    );

    let canary = ApplyRequest {
        name: "c.yaml".into(),
        topology: REFERENCE.into(),
        expect_revision: None,
        canary: "gw-nope".into(),
    };
    assert_eq!(
        alice
            .apply(canary)
            .await
            .map(|_| ())
            .expect_err("unknown canary")
            .code(),
        tonic::Code::InvalidArgument
    );
    assert_eq!(
        alice
            .diff(DiffRequest { from: 1, to: 9 })
            .await
            .expect_err("no revision 9")
            .code(),
        tonic::Code::NotFound
    );
    assert_eq!(
        alice
            .rollback(RollbackRequest {
                revision: 9,
                ..Default::default()
            })
            .await
            .map(|_| ())
            .expect_err("no rev")
            .code(),
        tonic::Code::NotFound
    );

    let h = alice
        .history(HistoryRequest { limit: 10 })
        .await
        .expect("history")
        .into_inner();
    assert_eq!(
        h.revisions.len(),
        1,
        "nothing was stored for the refused requests"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_diff_and_events() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let ctl = Controller::start(&pki, &dir.path().join("store.db")).await;
    let (core, _his) = (agent(&ctl, &pki, "gw-core"), agent(&ctl, &pki, "gw-his"));
    let mut alice = admin(&ctl, &pki, "alice").await;
    wait_connected(&mut alice, 2).await;
    apply(&mut alice, REFERENCE, None).await.expect("rev 1");
    let rev1 = core.seen().state;
    apply(&mut alice, &changed_reference(), Some(1))
        .await
        .expect("rev 2");
    assert_ne!(core.seen().state, rev1);

    let d = alice
        .diff(DiffRequest { from: 1, to: 2 })
        .await
        .expect("diff")
        .into_inner();
    assert!(
        d.topology_diff.contains("-  - name: thin-client"),
        "{}",
        d.topology_diff
    );
    let core_changes = d
        .gateways
        .iter()
        .find(|g| g.gateway == "gw-core")
        .map(|g| g.changes.clone())
        .unwrap_or_default();
    assert!(
        core_changes
            .iter()
            .any(|c| c.starts_with("- nft") && c.contains("thin-client")),
        "{core_changes:?}"
    );
    assert!(
        d.gateways
            .iter()
            .any(|g| g.gateway == "gw-his" && g.changes.is_empty()),
        "gw-his unchanged"
    );

    let out = collect(
        alice
            .rollback(RollbackRequest {
                revision: 1,
                expect_revision: Some(2),
                canary: String::new(),
            })
            .await
            .expect("rollback")
            .into_inner(),
    )
    .await
    .expect("rollback applies");
    assert_eq!(out.last().map(|p| p.revision), Some(3));
    assert_eq!(
        core.seen().state,
        rev1,
        "rollback restores revision 1's state"
    );
    assert_eq!(core.seen().revision, Some(3));
    let h = alice
        .history(HistoryRequest { limit: 10 })
        .await
        .expect("history")
        .into_inner();
    assert_eq!(
        (h.current_revision, h.revisions[0].kind.as_str()),
        (3, "rollback")
    );

    let events: Vec<Event> = {
        let mut s = alice
            .events(EventsRequest {
                after: 0,
                limit: 100,
                follow: false,
            })
            .await
            .expect("events")
            .into_inner();
        let mut v = Vec::new();
        while let Some(e) = s.message().await.expect("event") {
            v.push(e);
        }
        v
    };
    assert!(events
        .iter()
        .any(|e| e.kind == "connect" && e.gateway == "gw-core"));
    assert_eq!(events.iter().filter(|e| e.kind == "rollout").count(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_and_lost_agents_show_in_status_and_follow_streams_events() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let ctl = Controller::start(&pki, &dir.path().join("store.db")).await;
    let (core, his) = (agent(&ctl, &pki, "gw-core"), agent(&ctl, &pki, "gw-his"));
    let mut alice = admin(&ctl, &pki, "alice").await;
    wait_connected(&mut alice, 2).await;
    apply(&mut alice, REFERENCE, None).await.expect("apply");
    let mut follow = alice
        .events(EventsRequest {
            after: 0,
            limit: 1,
            follow: true,
        })
        .await
        .expect("follow")
        .into_inner();
    let _ = follow.message().await.expect("backlog");

    core.link.drift(&tiernet::agent::drift::DriftEvent {
        gateway: "gw-core".into(),
        at_ms: 1,
        cause: vec!["route deleted (proto 201)".into()],
        expected: vec!["add route 10.4.10.0/24 via 10.255.0.2 dev tr900".into()],
        notices: vec![],
        action: "reported: flapping (1), another process keeps changing it; backing off".into(),
        latency_ms: 1.0,
    });
    core.link.set_in_sync(false);
    let e = tokio::time::timeout(Duration::from_secs(5), follow.message())
        .await
        .expect("event in time")
        .expect("stream")
        .expect("event");
    assert_eq!((e.kind.as_str(), e.gateway.as_str()), ("drift", "gw-core"));
    wait_until(Duration::from_secs(5), "DRIFTED", async || {
        states(&status(&mut alice).await).contains(&("gw-core".into(), "DRIFTED".into()))
    })
    .await;
    core.link.set_in_sync(true);
    drop(his);
    wait_until(Duration::from_secs(5), "UNREACHABLE", async || {
        states(&status(&mut alice).await)
            == [
                ("gw-core".into(), "IN_SYNC".into()),
                ("gw-his".into(), "UNREACHABLE".into()),
            ]
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_controller_finds_agents_in_sync_without_reapplying() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store.db");
    let mut ctl = Controller::start(&pki, &store).await;
    let (core, his) = (agent(&ctl, &pki, "gw-core"), agent(&ctl, &pki, "gw-his"));
    let mut alice = admin(&ctl, &pki, "alice").await;
    wait_connected(&mut alice, 2).await;
    apply(&mut alice, REFERENCE, None).await.expect("apply");
    let addr = ctl.addr;
    ctl.stop().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        core.seen().revision,
        Some(1),
        "agents keep their state while the controller is away"
    );

    let ctl = Controller::start_at(&pki, &store, addr).await;
    let mut alice = admin(&ctl, &pki, "alice").await;
    wait_until(
        Duration::from_secs(10),
        "agents back and in sync",
        async || {
            states(&status(&mut alice).await)
                == [
                    ("gw-core".into(), "IN_SYNC".into()),
                    ("gw-his".into(), "IN_SYNC".into()),
                ]
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        core.seen().received,
        vec![1],
        "no re-apply after the restart"
    );
    assert_eq!(his.seen().received, vec![1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_flows_leave_the_gateways_as_a_new_revision_when_the_day_ends() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store.db");
    let mut ctl = Controller::start(&pki, &store).await;
    let (core, _his) = (agent(&ctl, &pki, "gw-core"), agent(&ctl, &pki, "gw-his"));
    let mut alice = admin(&ctl, &pki, "alice").await;
    wait_connected(&mut alice, 2).await;
    apply(&mut alice, REFERENCE, None).await.expect("apply");
    let has_download = |a: &tiernet::agent::noop::NoopAgent| {
        a.seen().state.is_some_and(|s| {
            tiernet::nftables::text::render_table(&s.table).contains("reviewed-download")
        })
    };
    assert!(
        has_download(&core),
        "the approved download flow is there before it expires"
    );
    let addr = ctl.addr;
    ctl.stop().await;

    // The next controller runs on the day after `expires: 2027-03-31`.
    let later = Settings {
        today: chrono::NaiveDate::from_ymd_opt(2027, 4, 1),
        ..settings(false)
    };
    let ctl = Controller::start_with(&pki, &store, addr, later, Duration::from_millis(200)).await;
    let mut alice = admin(&ctl, &pki, "alice").await;
    wait_until(Duration::from_secs(15), "the expiry revision", async || {
        alice
            .history(HistoryRequest { limit: 5 })
            .await
            .expect("history")
            .into_inner()
            .current_revision
            == 2
    })
    .await;
    let h = alice
        .history(HistoryRequest { limit: 5 })
        .await
        .expect("history")
        .into_inner();
    assert_eq!(
        (h.revisions[0].kind.as_str(), h.revisions[0].author.as_str()),
        ("expiry", "controller")
    );
    assert!(
        !has_download(&core),
        "the expired flow is gone from gw-core"
    );
    assert_eq!(core.seen().revision, Some(2));
}

/// A state that is not the closed one: what a gateway enforced before it joined the
/// controller (here: the closed state without its input chain).
fn standalone(gateway: &str) -> tiernet::compile::GatewayState {
    let mut s = tiernet::compile::firewall::closed_state(gateway);
    s.table.chains.truncate(1);
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_first_revision_puts_gateways_back_on_their_pre_controller_state() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let ctl = Controller::start(&pki, &dir.path().join("store.db")).await;
    let before = |gw: &str| Seen {
        received: Vec::new(),
        revision: None,
        state: Some(standalone(gw)),
    };
    let cfg = |gw: &str| link_config(&ctl.url, gw, Some(pki.files(gw)));
    let core = NoopAgent::start(cfg("gw-core"), before("gw-core"));
    let his = NoopAgent::start(cfg("gw-his"), before("gw-his"));
    let mut alice = admin(&ctl, &pki, "alice").await;
    wait_connected(&mut alice, 2).await;

    his.fail_on(1);
    let err = apply(&mut alice, REFERENCE, Some(0))
        .await
        .expect_err("the first rollout fails");
    assert_eq!(err.code(), tonic::Code::Aborted, "{err:?}");
    assert!(
        err.message().contains("gw-his") && err.message().contains("revision 0"),
        "{}",
        err.message()
    );
    // All or nothing: gw-core applied revision 1 and went back to exactly what it had.
    assert_eq!(
        core.seen().received,
        vec![1, 0],
        "gw-core: 1, then back to 0"
    );
    assert_eq!(core.seen().state, Some(standalone("gw-core")));
    assert_eq!(core.seen().revision, Some(0));
    assert_eq!(his.seen().received, vec![0], "gw-his never took revision 1");
    assert_eq!(his.seen().state, Some(standalone("gw-his")));

    let s = status(&mut alice).await;
    assert_eq!(s.current_revision, 0);
    for g in &s.gateways {
        assert!(g.connected && g.applied_revision == 0, "{g:?}");
        assert!(g.detail.contains("revision 0"), "{g:?}");
    }
    let h = alice
        .history(HistoryRequest { limit: 10 })
        .await
        .expect("history")
        .into_inner();
    assert_eq!(h.current_revision, 0);
    assert_eq!(h.revisions[0].status, "failed");
    assert!(
        h.revisions[0].message.contains("rolled back to revision 0"),
        "{}",
        h.revisions[0].message
    );
    assert!(
        !h.revisions[0].message.contains("keep"),
        "no gateway keeps the failed revision: {}",
        h.revisions[0].message
    );

    // The controller keeps the baseline: an agent restarted with nothing to tell (it lost
    // its memory of what it had) still goes back to it. A later good revision just applies.
    drop(core);
    let core = NoopAgent::start(cfg("gw-core"), Seen::default());
    wait_connected(&mut alice, 2).await;
    his.fail_on(2);
    apply(&mut alice, REFERENCE, Some(0))
        .await
        .expect_err("gw-his fails again");
    assert_eq!(core.seen().received, vec![2, 0]);
    assert_eq!(
        core.seen().state,
        Some(standalone("gw-core")),
        "the controller kept gw-core's baseline from its first connection"
    );
    his.fail.lock().expect("lock").clear();
    apply(&mut alice, REFERENCE, Some(0))
        .await
        .expect("revision 3 applies");
    assert_eq!(core.seen().revision, Some(3));
    assert_eq!(status(&mut alice).await.current_revision, 3);
}

/// `tiernet plan FILE` against the controller as alice, `--output` text or json.
async fn plan_cli(ctl: &Controller, pki: &Pki, file: &std::path::Path, json: bool) -> String {
    let f = pki.files("alice");
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_tiernet"));
    cmd.arg("plan")
        .arg(file)
        .args(["--controller", &ctl.url])
        .arg("--ca")
        .arg(&f.ca)
        .arg("--cert")
        .arg(&f.cert)
        .arg("--key")
        .arg(&f.key);
    if json {
        cmd.args(["--output", "json"]);
    }
    let out = cmd.output().await.expect("tiernet plan runs");
    assert!(
        out.status.success(),
        "tiernet plan: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn plan_of<'a>(reply: &'a PlanReply, gateway: &str) -> &'a GatewayPlan {
    reply
        .gateways
        .iter()
        .find(|g| g.gateway == gateway)
        .unwrap_or_else(|| panic!("{gateway} in {reply:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_compares_each_gateway_with_the_revision_its_agent_reports() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let ctl = Controller::start(&pki, &dir.path().join("store.db")).await;
    let cfg = |gw: &str| link_config(&ctl.url, gw, Some(pki.files(gw)));
    let core = NoopAgent::start(cfg("gw-core"), Seen::default());
    let his = NoopAgent::start(cfg("gw-his"), Seen::default());
    let mut alice = admin(&ctl, &pki, "alice").await;
    wait_connected(&mut alice, 2).await;
    apply(&mut alice, REFERENCE, Some(0)).await.expect("rev 1");
    let core_rev1 = core.seen();
    apply(&mut alice, &changed_reference(), Some(1))
        .await
        .expect("rev 2");

    // gw-core's agent comes back lagging on revision 1 (say, restored from a backup) and
    // cannot apply revision 2: it stays on 1.
    drop(core);
    let core = NoopAgent::start(cfg("gw-core"), core_rev1.clone());
    core.fail_on(2);
    wait_until(Duration::from_secs(10), "gw-core back on 1", async || {
        status(&mut alice)
            .await
            .gateways
            .iter()
            .any(|g| g.gateway == "gw-core" && g.connected && g.applied_revision == 1)
    })
    .await;
    assert_eq!(core.seen().revision, Some(1));

    let planner = alice.clone();
    let plan = |t: String| {
        let mut a = planner.clone();
        async move {
            a.plan(TopologyRequest {
                name: "t.yaml".into(),
                topology: t,
            })
            .await
            .expect("plan")
            .into_inner()
        }
    };
    // The topology of revision 2: nothing to do on gw-his (on 2); on gw-core, what 2
    // changed from 1, because that is what gw-core enforces.
    let p = plan(changed_reference()).await;
    assert_eq!(p.current_revision, 2);
    let c = plan_of(&p, "gw-core");
    assert_eq!(
        (
            c.agent_state.as_str(),
            c.reported_revision,
            c.against_revision
        ),
        ("NOT_IN_SYNC", 1, 1),
        "{c:?}"
    );
    assert!(!c.changes.is_empty(), "{c:?}");
    assert!(
        c.changes.iter().all(|l| l.starts_with("- "))
            && c.changes.iter().any(|l| l.contains("thin-client")),
        "gw-core loses the thin-client flow it still has: {c:?}"
    );
    assert!(c.note.contains("revision 1"), "{c:?}");
    let h = plan_of(&p, "gw-his");
    assert_eq!(
        (h.agent_state.as_str(), h.against_revision, h.changes.len()),
        ("IN_SYNC", 2, 0),
        "{h:?}"
    );
    // The topology of revision 1: nothing for gw-core.
    let p = plan(REFERENCE.to_string()).await;
    assert!(plan_of(&p, "gw-core").changes.is_empty(), "{p:?}");

    // The CLI shows it, as a table and as JSON.
    let file = dir.path().join("v2.yaml");
    std::fs::write(&file, changed_reference()).expect("write");
    let text = plan_cli(&ctl, &pki, &file, false).await;
    let row = text
        .lines()
        .find(|l| l.starts_with("gw-core ") && l.contains("NOT_IN_SYNC"))
        .unwrap_or_else(|| panic!("gw-core row in:\n{text}"));
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(&cells[..4], ["gw-core", "NOT_IN_SYNC", "1", "1"], "{text}");
    assert!(text.contains("against revision 1"), "{text}");
    let json: serde_json::Value =
        serde_json::from_str(&plan_cli(&ctl, &pki, &file, true).await).expect("json");
    let gws = json["gateways"].as_array().expect("gateways");
    let jc = gws
        .iter()
        .find(|g| g["gateway"] == "gw-core")
        .expect("gw-core");
    assert_eq!(jc["agent_state"], "NOT_IN_SYNC", "{json}");
    assert_eq!(jc["against_revision"], 1, "{json}");
    assert_eq!(jc["reported_revision"], 1, "{json}");

    // Not connected: against the current revision, said so. Unknown revision: likewise.
    drop(his);
    wait_until(Duration::from_secs(10), "gw-his gone", async || {
        !status(&mut alice)
            .await
            .gateways
            .iter()
            .any(|g| g.gateway == "gw-his" && g.connected)
    })
    .await;
    let p = plan(changed_reference()).await;
    let h = plan_of(&p, "gw-his");
    assert_eq!(
        (h.agent_state.as_str(), h.connected, h.against_revision),
        ("UNREACHABLE", false, 2),
        "{h:?}"
    );
    let odd = Seen {
        received: Vec::new(),
        revision: Some(99),
        state: core_rev1.state.clone().map(|mut s| {
            s.gateway = "gw-his".into();
            s
        }),
    };
    let his = NoopAgent::start(cfg("gw-his"), odd);
    his.fail_on(2);
    wait_until(Duration::from_secs(10), "gw-his on 99", async || {
        status(&mut alice)
            .await
            .gateways
            .iter()
            .any(|g| g.gateway == "gw-his" && g.connected && g.applied_revision == 99)
    })
    .await;
    let p = plan(changed_reference()).await;
    let h = plan_of(&p, "gw-his");
    assert_eq!(
        (
            h.agent_state.as_str(),
            h.reported_revision,
            h.against_revision
        ),
        ("UNKNOWN_REVISION", 99, 2),
        "{h:?}"
    );
    assert!(h.note.contains("no copy"), "{h:?}");
}
