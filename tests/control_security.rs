//! Who may talk to the controller: mutual TLS from the site CA, agents only as their own
//! gateway, viewers read-only, no plaintext; and the audit log shows tampering.

mod control_util;

use control_util::*;
use std::time::Duration;
use tiernet::controller::tls::{connect, TlsFiles};
use tiernet::pki::Role;
use tiernet::proto::v1::admin_client::AdminClient;
use tiernet::proto::v1::agent_link_client::AgentLinkClient;
use tiernet::proto::v1::*;
use tokio_stream::wrappers::ReceiverStream;

/// Opens an agent stream saying hello as `gateway`; the controller's answer.
async fn hello(url: &str, tls: Option<&TlsFiles>, gateway: &str) -> Result<(), tonic::Status> {
    let channel = connect(url, tls)
        .await
        .map_err(|e| tonic::Status::unavailable(format!("{e:#}")))?;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let hello = Hello {
        gateway: gateway.into(),
        report: Some(AgentReport::default()),
    };
    tx.send(AgentMessage {
        msg: Some(agent_message::Msg::Hello(hello)),
    })
    .await
    .expect("queued");
    let resp = AgentLinkClient::new(channel)
        .link(ReceiverStream::new(rx))
        .await?;
    drop(resp);
    drop(tx);
    Ok(())
}

/// Refused at the connection (TLS handshake or HTTP/2 preface), before any RPC ran.
fn assert_refused_by_transport(err: &tonic::Status) {
    // A status the server sent has no source; one made from a failed connection has.
    let transport = std::error::Error::source(err).is_some() || err.message() == "connect failed";
    assert!(transport, "expected a transport-level refusal, got {err:?}");
}

async fn setup() -> (Pki, tempfile::TempDir, Controller) {
    let pki = Pki::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let ctl = Controller::start(&pki, &dir.path().join("store.db")).await;
    (pki, dir, ctl)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_certificate_from_another_ca_is_refused() {
    let (_pki, _dir, ctl) = setup().await;
    let rogue = Pki::new(); // its own CA, its own gw-core certificate
    let files = TlsFiles {
        ca: _pki.files("gw-core").ca,
        ..rogue.files("gw-core")
    };
    let err = hello(&ctl.url, Some(&files), "gw-core")
        .await
        .expect_err("a foreign CA's certificate is refused");
    assert_refused_by_transport(&err);
    let mut alice = admin(&ctl, &_pki, "alice").await;
    assert!(
        status(&mut alice).await.gateways.is_empty(),
        "nothing connected"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_presenting_another_gateways_name_is_refused() {
    let (pki, _dir, ctl) = setup().await;
    let err = hello(&ctl.url, Some(&pki.files("gw-his")), "gw-core")
        .await
        .expect_err("gw-his cannot be gw-core");
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    assert!(
        err.message().contains("certificate is for 'gw-his'"),
        "{}",
        err.message()
    );
    // An admin certificate is no agent either.
    let err = hello(&ctl.url, Some(&pki.files("alice")), "alice")
        .await
        .expect_err("admins hold no agent stream");
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_stream_and_unknown_gateway_are_refused() {
    let (pki, _dir, ctl) = setup().await;
    let (_core, _his) = (agent(&ctl, &pki, "gw-core"), agent(&ctl, &pki, "gw-his"));
    let mut alice = admin(&ctl, &pki, "alice").await;
    wait_connected(&mut alice, 2).await;
    let err = hello(&ctl.url, Some(&pki.files("gw-core")), "gw-core")
        .await
        .expect_err("one stream per gateway");
    assert_eq!(err.code(), tonic::Code::AlreadyExists);

    apply(&mut alice, REFERENCE, None).await.expect("apply");
    pki.issue(Role::Agent, "gw-rogue");
    let err = hello(&ctl.url, Some(&pki.files("gw-rogue")), "gw-rogue")
        .await
        .expect_err("not in the topology");
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    assert!(
        err.message().contains("not in the current revision"),
        "{}",
        err.message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewer_reads_but_cannot_apply_or_roll_back() {
    let (pki, _dir, ctl) = setup().await;
    let mut victor = admin(&ctl, &pki, "victor").await;
    assert_eq!(
        status(&mut victor).await.current_revision,
        0,
        "viewers read status"
    );
    victor
        .history(HistoryRequest { limit: 5 })
        .await
        .expect("viewers read history");
    let err = apply(&mut victor, REFERENCE, None)
        .await
        .expect_err("viewer apply");
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    assert!(err.message().contains("role viewer"), "{}", err.message());
    let err = victor
        .rollback(RollbackRequest {
            revision: 1,
            ..Default::default()
        })
        .await
        .map(|_| ())
        .expect_err("viewer rollback");
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    // Agent certificates are no admin credentials either.
    let mut core = admin(&ctl, &pki, "gw-core").await;
    assert_eq!(
        core.status(StatusRequest {})
            .await
            .expect_err("agent as admin")
            .code(),
        tonic::Code::PermissionDenied
    );
    let h = victor
        .history(HistoryRequest { limit: 5 })
        .await
        .expect("history")
        .into_inner();
    assert!(h.revisions.is_empty(), "nothing was stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_and_certificateless_clients_are_refused() {
    let (pki, _dir, ctl) = setup().await;
    let plain = ctl.url.replace("https://", "http://");
    let err = match connect(&plain, None).await {
        Ok(ch) => AdminClient::new(ch)
            .status(StatusRequest {})
            .await
            .expect_err("plaintext refused"),
        Err(_) => tonic::Status::unavailable("connect failed"),
    };
    assert_refused_by_transport(&err);
    // TLS that trusts the controller but presents no client certificate.
    let ca =
        tonic::transport::Certificate::from_pem(std::fs::read(pki.files("alice").ca).expect("ca"));
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(ca)
        .domain_name("127.0.0.1");
    let endpoint = tonic::transport::Endpoint::from_shared(ctl.url.clone())
        .expect("url")
        .tls_config(tls)
        .expect("tls");
    let outcome = match endpoint.connect().await {
        Ok(ch) => AdminClient::new(ch)
            .status(StatusRequest {})
            .await
            .map(|_| ()),
        Err(e) => Err(tonic::Status::unavailable(e.to_string())),
    };
    assert!(outcome.is_err(), "no client certificate, no service");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insecure_mode_binds_loopback_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = tiernet::controller::server::ServeConfig {
        listen: "0.0.0.0:0".parse().expect("addr"),
        store: dir.path().join("s.db"),
        tls: None,
        settings: settings(true),
        ready_file: None,
        expiry_check: Duration::from_secs(60),
    };
    let err = tiernet::controller::server::serve(cfg, async {})
        .await
        .expect_err("refused");
    assert!(format!("{err:#}").contains("loopback only"), "{err:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_audit_record_fails_audit_verify() {
    let (pki, dir, mut ctl) = setup().await;
    let (_core, _his) = (agent(&ctl, &pki, "gw-core"), agent(&ctl, &pki, "gw-his"));
    let mut alice = admin(&ctl, &pki, "alice").await;
    wait_connected(&mut alice, 2).await;
    apply(&mut alice, REFERENCE, None).await.expect("rev 1");
    apply(&mut alice, &changed_reference(), None)
        .await
        .expect("rev 2");
    let records = alice
        .audit(AuditRequest { after: 0 })
        .await
        .expect("audit")
        .into_inner()
        .records;
    assert_eq!(records.len(), 2);
    assert_eq!(
        (
            records[0].actor.as_str(),
            records[0].kind.as_str(),
            records[0].revision
        ),
        ("alice", "apply", 1)
    );
    assert!(
        records[1].detail_json.contains("thin-client"),
        "the diff is recorded"
    );
    ctl.stop().await;

    let store = dir.path().join("store.db");
    let verify = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_tiernet"))
            .args([
                "audit",
                "verify",
                "--store",
                store.to_str().unwrap_or_default(),
            ])
            .output()
            .expect("tiernet runs")
    };
    let ok = verify();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("intact: 2 records"));

    let db = rusqlite::Connection::open(&store).expect("open store");
    let refused = db.execute("UPDATE audit SET actor = 'mallory' WHERE seq = 1", []);
    assert!(refused.is_err(), "the store refuses edits to the audit log");
    db.execute_batch(
        "DROP TRIGGER audit_no_update; UPDATE audit SET actor = 'mallory' WHERE seq = 1;",
    )
    .expect("tamper");
    drop(db);
    let bad = verify();
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("audit record 1"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
}
