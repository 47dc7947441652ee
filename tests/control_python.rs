//! A real independent client: Python grpcio with stubs generated from proto/ by
//! grpcio-tools (installed by scripts/install-deps.sh) calls Status and History over
//! mutual TLS.

mod control_util;

use control_util::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_grpcio_client_reads_status_and_history() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let ctl = Controller::start(&pki, &dir.path().join("store.db")).await;
    let (_core, _his) = (agent(&ctl, &pki, "gw-core"), agent(&ctl, &pki, "gw-his"));
    let mut alice = admin(&ctl, &pki, "alice").await;
    wait_connected(&mut alice, 2).await;
    apply(&mut alice, REFERENCE, None).await.expect("apply");

    let generated = dir.path().join("py");
    std::fs::create_dir_all(&generated).expect("dir");
    let out = std::process::Command::new("python3")
        .args(["-m", "grpc_tools.protoc", "-Iproto"])
        .arg(format!("--python_out={}", generated.display()))
        .arg(format!("--grpc_python_out={}", generated.display()))
        .arg("proto/tiernet/v1/control.proto")
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "grpc_tools.protoc (pip install grpcio grpcio-tools): {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let files = pki.files("victor");
    let target = format!("localhost:{}", ctl.addr.port());
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("python3")
            .arg("tests/python/status_history.py")
            .arg(&generated)
            .arg(&target)
            .args([&files.ca, &files.cert, &files.key])
            .output()
            .expect("python3 runs")
    })
    .await
    .expect("joined");
    assert!(
        out.status.success(),
        "python client: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("json from the python client");
    assert_eq!(v["current_revision"], 1);
    assert_eq!(v["gateways"]["gw-core"], "IN_SYNC");
    assert_eq!(v["gateways"]["gw-his"], "IN_SYNC");
    assert_eq!(v["history"][0]["author"], "alice");
    assert_eq!(v["history"][0]["status"], "applied");
}
