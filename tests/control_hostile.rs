//! Hostile and malformed requests against an in-process controller over real mutual TLS:
//! a corpus of admin requests and agent-stream conversations, each of which must be
//! answered with a clear gRPC status (the expected code, and a message naming the reason)
//! and must change nothing: the number of revisions, the current revision and the audit
//! log are compared before and after every case.

mod control_util;

use control_util::*;
use prost::bytes::{Buf, BufMut};
use std::time::Duration;
use tiernet::agent::noop::NoopAgent;
use tiernet::controller::tls::{connect, TlsFiles};
use tiernet::pki::Role;
use tiernet::proto::v1::admin_client::AdminClient;
use tiernet::proto::v1::agent_link_client::AgentLinkClient;
use tiernet::proto::v1::*;
use tokio_stream::wrappers::ReceiverStream;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;
use tonic::{Code, Status};

/// Sends and receives raw protobuf bytes: requests no generated client would build.
#[derive(Clone, Copy, Default)]
struct Raw;
struct RawEnc;
struct RawDec;

impl Codec for Raw {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawEnc;
    type Decoder = RawDec;
    fn encoder(&mut self) -> RawEnc {
        RawEnc
    }
    fn decoder(&mut self) -> RawDec {
        RawDec
    }
}

impl Encoder for RawEnc {
    type Item = Vec<u8>;
    type Error = Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawDec {
    type Item = Vec<u8>;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        let mut v = vec![0; src.remaining()];
        src.copy_to_slice(&mut v);
        Ok(Some(v))
    }
}

async fn raw_unary(ch: &Channel, path: &'static str, body: Vec<u8>) -> Result<(), Status> {
    let mut g = tonic::client::Grpc::new(ch.clone());
    g.ready()
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    g.unary(
        tonic::Request::new(body),
        PathAndQuery::from_static(path),
        Raw,
    )
    .await
    .map(|_| ())
}

/// Protobuf: a length-delimited field.
fn field(n: u8, bytes: &[u8]) -> Vec<u8> {
    let mut out = vec![(n << 3) | 2];
    let mut len = bytes.len();
    loop {
        let b = (len & 0x7f) as u8;
        len >>= 7;
        if len == 0 {
            out.push(b);
            break;
        }
        out.push(b | 0x80);
    }
    out.extend_from_slice(bytes);
    out
}

/// Deterministic pseudo-random bytes (xorshift).
fn noise(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// What must not change.
#[derive(Debug, PartialEq)]
struct Snapshot {
    revisions: Vec<(u64, String)>,
    current: u64,
    audit: Vec<(u64, String)>,
}

async fn snapshot(c: &mut AdminClient<Channel>) -> Snapshot {
    let h = c
        .history(HistoryRequest { limit: 10_000 })
        .await
        .expect("history")
        .into_inner();
    let a = c
        .audit(AuditRequest { after: 0 })
        .await
        .expect("audit")
        .into_inner();
    Snapshot {
        revisions: h
            .revisions
            .iter()
            .map(|r| (r.id, r.status.clone()))
            .collect(),
        current: h.current_revision,
        audit: a.records.into_iter().map(|r| (r.seq, r.hash)).collect(),
    }
}

fn topology_request(name: &str, topology: String) -> TopologyRequest {
    TopologyRequest {
        name: name.into(),
        topology,
    }
}

fn apply_request(topology: String) -> ApplyRequest {
    ApplyRequest {
        name: "hostile.yaml".into(),
        topology,
        expect_revision: None,
        canary: String::new(),
    }
}

/// The first status of a streaming answer (the call's or the stream's), or Ok when the
/// stream ended cleanly.
async fn first_error<T>(
    r: Result<tonic::Response<tonic::Streaming<T>>, Status>,
) -> Result<(), Status> {
    let mut s = r?.into_inner();
    loop {
        match s.message().await {
            Ok(Some(_)) => continue,
            Ok(None) => return Ok(()),
            Err(e) => return Err(e),
        }
    }
}

struct Agentish {
    ch: Channel,
    /// gw-his's state digest for revision 1: a hello that needs no re-apply.
    report: AgentReport,
}

impl Agentish {
    fn msg(m: agent_message::Msg) -> AgentMessage {
        AgentMessage { msg: Some(m) }
    }

    fn hello(&self, gateway: &str) -> AgentMessage {
        Self::msg(agent_message::Msg::Hello(Hello {
            gateway: gateway.into(),
            report: Some(self.report.clone()),
        }))
    }

    /// Opens a stream, sends `msgs`, and returns how the controller ended it (Ok: it
    /// kept it open for `wait`, or closed it cleanly).
    async fn talk(&self, msgs: Vec<AgentMessage>, wait: Duration) -> Result<(), Status> {
        let (tx, rx) = tokio::sync::mpsc::channel(msgs.len().max(1));
        for m in msgs {
            tx.send(m).await.expect("queued");
        }
        let mut client = AgentLinkClient::new(self.ch.clone()).max_decoding_message_size(64 << 20);
        let mut inbound = client.link(ReceiverStream::new(rx)).await?.into_inner();
        let outcome = match tokio::time::timeout(wait, async {
            loop {
                match inbound.message().await {
                    Ok(Some(_)) => continue,
                    Ok(None) => return Ok(()),
                    Err(e) => return Err(e),
                }
            }
        })
        .await
        {
            Ok(r) => r,
            Err(_) => Ok(()),
        };
        drop(tx);
        outcome
    }

    /// Raw bytes as the stream's messages.
    async fn talk_raw(&self, msgs: Vec<Vec<u8>>) -> Result<(), Status> {
        let mut g = tonic::client::Grpc::new(self.ch.clone());
        g.ready()
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let (tx, rx) = tokio::sync::mpsc::channel(msgs.len().max(1));
        for m in msgs {
            tx.send(m).await.expect("queued");
        }
        let r = g
            .streaming(
                tonic::Request::new(ReceiverStream::new(rx)),
                PathAndQuery::from_static("/tiernet.v1.AgentLink/Link"),
                Raw,
            )
            .await;
        let out = match r {
            Err(e) => Err(e),
            Ok(resp) => {
                let mut s = resp.into_inner();
                match tokio::time::timeout(Duration::from_secs(3), s.message()).await {
                    Ok(Err(e)) => Err(e),
                    _ => Ok(()),
                }
            }
        };
        drop(tx);
        out
    }
}

type Case = (String, Result<(), Status>, Code, &'static str);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_requests_get_a_clear_status_and_change_nothing() {
    let pki = Pki::new();
    pki.issue(Role::Agent, "gw-x");
    let dir = tempfile::tempdir().expect("tempdir");
    let ctl = Controller::start(&pki, &dir.path().join("store.db")).await;
    let (core, his) = (agent(&ctl, &pki, "gw-core"), agent(&ctl, &pki, "gw-his"));
    let mut alice = admin(&ctl, &pki, "alice")
        .await
        .max_decoding_message_size(64 << 20);
    wait_connected(&mut alice, 2).await;
    apply(&mut alice, REFERENCE, Some(0)).await.expect("rev 1");
    let his_state = his.seen().state.expect("gw-his state");
    let report = AgentReport {
        applied_revision: 1,
        state_digest: tiernet::proto::state_digest(&his_state),
        in_sync: true,
    };
    drop(his);
    wait_until(Duration::from_secs(10), "gw-his gone", async || {
        status(&mut alice)
            .await
            .gateways
            .iter()
            .all(|g| g.gateway != "gw-his" || !g.connected)
    })
    .await;
    let _core: NoopAgent = core;
    let chan = |name: &str| {
        let f: TlsFiles = pki.files(name);
        let url = ctl.url.clone();
        async move { connect(&url, Some(&f)).await.expect("connects") }
    };
    let admin_ch = chan("alice").await;
    let his_ch = chan("gw-his").await;
    let mut victor = AdminClient::new(chan("victor").await);
    let mut as_agent = AdminClient::new(chan("gw-core").await);
    let agentish = Agentish {
        ch: his_ch.clone(),
        report: report.clone(),
    };
    let stranger = Agentish {
        ch: chan("gw-x").await,
        report: report.clone(),
    };
    let admin_as_agent = Agentish {
        ch: admin_ch.clone(),
        report: report.clone(),
    };

    // A stream that never says hello, running alongside the rest (10 s hello timeout).
    let silent = {
        let a = Agentish {
            ch: his_ch.clone(),
            report: report.clone(),
        };
        tokio::spawn(async move { a.talk(vec![], Duration::from_secs(15)).await })
    };

    let before = snapshot(&mut alice).await;
    let mut cases: Vec<Case> = Vec::new();
    let mut watcher = alice.clone();
    let mut check = async |label: String, r: Result<(), Status>, code: Code, why: &'static str| {
        cases.push((label, r, code, why));
        let now = snapshot(&mut watcher).await;
        assert_eq!(
            now,
            before,
            "state changed by the last case: {:?}",
            cases.last().map(|c| &c.0)
        );
    };

    // --- admin: topologies that are not topologies ---
    for seed in 0..10u64 {
        let text = String::from_utf8_lossy(&noise(seed, 4096 + seed as usize * 997)).into_owned();
        let r = first_error(alice.apply(apply_request(text.clone())).await).await;
        check(
            format!("apply random bytes #{seed}"),
            r,
            Code::InvalidArgument,
            "does not validate",
        )
        .await;
        if seed < 5 {
            let r = alice
                .plan(topology_request("noise.yaml", text))
                .await
                .map(|_| ());
            check(
                format!("plan random bytes #{seed}"),
                r,
                Code::InvalidArgument,
                "does not validate",
            )
            .await;
        }
    }
    for (label, text, why) in [
        ("empty topology", String::new(), "empty topology"),
        ("blank topology", " \n\t\n".to_string(), "empty topology"),
        ("a YAML list", "- a\n- b\n".to_string(), "does not validate"),
        ("a YAML scalar", "42\n".to_string(), "does not validate"),
        ("null", "null\n".to_string(), "does not validate"),
        (
            "NUL bytes",
            "tiers:\0\0\0\n".to_string(),
            "does not validate",
        ),
        (
            "deeply nested flow sequences",
            format!("tiers: {}{}\n", "[".repeat(200_000), "]".repeat(200_000)),
            "does not validate",
        ),
        (
            "deeply nested flow mappings",
            format!("tiers: {}{}\n", "{a: ".repeat(50_000), "}".repeat(50_000)),
            "does not validate",
        ),
        (
            "deeply indented mappings",
            (0..2000)
                .map(|i| format!("{}k{i}:\n", " ".repeat(i)))
                .collect(),
            "does not validate",
        ),
        (
            "alias bomb",
            {
                let mut s =
                    String::from("l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
                for i in 1..10 {
                    let refs = vec![format!("*l{}", i - 1); 10].join(", ");
                    s.push_str(&format!("l{i}: &l{i} [{refs}]\n"));
                }
                s
            },
            "does not validate",
        ),
        (
            "a million gateways' worth of one key",
            "gateways:\n".to_string() + &"  - name: g\n".repeat(200_000),
            "does not validate",
        ),
        (
            "reference with a flow to nowhere",
            REFERENCE.replace("to: vdi-gateway", "to: nowhere"),
            "does not validate",
        ),
    ] {
        let r = first_error(alice.apply(apply_request(text.clone())).await).await;
        check(format!("apply {label}"), r, Code::InvalidArgument, why).await;
    }
    // Large but under the 16 MiB limit (and over tonic's 4 MiB default): read, refused
    // for what it says.
    let r = first_error(alice.apply(apply_request("#\n".repeat(5 << 20))).await).await;
    check(
        "apply 10 MiB of comments".into(),
        r,
        Code::InvalidArgument,
        "does not validate",
    )
    .await;
    // Oversized: over the 16 MiB message limit, refused before decoding.
    for mib in [17usize, 64] {
        let big = "#".repeat(mib << 20);
        let r = first_error(alice.apply(apply_request(big.clone())).await).await;
        check(
            format!("apply {mib} MiB topology"),
            r,
            Code::OutOfRange,
            "message length too large",
        )
        .await;
        let r = alice
            .plan(topology_request("big.yaml", big.clone()))
            .await
            .map(|_| ());
        check(
            format!("plan {mib} MiB topology"),
            r,
            Code::OutOfRange,
            "message length too large",
        )
        .await;
        let r = alice
            .validate(topology_request("big.yaml", big))
            .await
            .map(|_| ());
        check(
            format!("validate {mib} MiB topology"),
            r,
            Code::OutOfRange,
            "message length too large",
        )
        .await;
    }
    // Names: bounded, one line.
    let r = first_error(
        alice
            .apply(ApplyRequest {
                name: "n".repeat(1 << 20),
                ..apply_request(REFERENCE.into())
            })
            .await,
    )
    .await;
    check(
        "apply with a 1 MiB name".into(),
        r,
        Code::InvalidArgument,
        "name too long",
    )
    .await;
    let r = alice
        .plan(topology_request("a\nb\u{1b}[2J", REFERENCE.into()))
        .await
        .map(|_| ());
    check(
        "plan with control characters in the name".into(),
        r,
        Code::InvalidArgument,
        "control characters",
    )
    .await;
    // Preconditions and canaries.
    for expect in [0, 2, 7, u64::MAX] {
        let r = first_error(
            alice
                .apply(ApplyRequest {
                    expect_revision: Some(expect),
                    ..apply_request(changed_reference())
                })
                .await,
        )
        .await;
        check(
            format!("apply expecting revision {expect}"),
            r,
            Code::FailedPrecondition,
            "the current revision is 1",
        )
        .await;
    }
    for canary in [
        "gw-nowhere".to_string(),
        "x".repeat(100_000),
        "gw-core\0".into(),
    ] {
        let r = first_error(
            alice
                .apply(ApplyRequest {
                    canary: canary.clone(),
                    ..apply_request(changed_reference())
                })
                .await,
        )
        .await;
        check(
            format!("apply with canary {} bytes", canary.len()),
            r,
            Code::InvalidArgument,
            "is not a gateway of this topology",
        )
        .await;
    }
    // Unknown revisions.
    for rev in [0, 2, 999, i64::MAX as u64, u64::MAX] {
        let r = first_error(
            alice
                .rollback(RollbackRequest {
                    revision: rev,
                    expect_revision: None,
                    canary: String::new(),
                })
                .await,
        )
        .await;
        check(
            format!("rollback to revision {rev}"),
            r,
            Code::NotFound,
            "no revision",
        )
        .await;
    }
    let r = first_error(
        alice
            .rollback(RollbackRequest {
                revision: 1,
                expect_revision: Some(5),
                canary: String::new(),
            })
            .await,
    )
    .await;
    check(
        "rollback expecting revision 5".into(),
        r,
        Code::FailedPrecondition,
        "the current revision is 1",
    )
    .await;
    for (from, to) in [
        (0, 1),
        (1, 0),
        (1, 999),
        (u64::MAX, 1),
        (u64::MAX, u64::MAX),
    ] {
        let r = alice.diff(DiffRequest { from, to }).await.map(|_| ());
        check(
            format!("diff {from} {to}"),
            r,
            Code::NotFound,
            "no revision",
        )
        .await;
    }
    // Roles.
    let r = first_error(victor.apply(apply_request(changed_reference())).await).await;
    check(
        "viewer applies".into(),
        r,
        Code::PermissionDenied,
        "cannot apply",
    )
    .await;
    let r = first_error(
        victor
            .rollback(RollbackRequest {
                revision: 1,
                expect_revision: None,
                canary: String::new(),
            })
            .await,
    )
    .await;
    check(
        "viewer rolls back".into(),
        r,
        Code::PermissionDenied,
        "cannot apply or roll back",
    )
    .await;
    let r = first_error(as_agent.apply(apply_request(changed_reference())).await).await;
    check(
        "agent certificate applies".into(),
        r,
        Code::PermissionDenied,
        "agent",
    )
    .await;
    let r = as_agent.status(StatusRequest {}).await.map(|_| ());
    check(
        "agent certificate reads status".into(),
        r,
        Code::PermissionDenied,
        "agent",
    )
    .await;
    // Bytes no client would send.
    let mut bad_utf8 = field(1, b"x.yaml");
    bad_utf8.extend(field(2, b"tiers:\n  - name: \xff\xfe\xc0\x80\n"));
    let r = raw_unary(&admin_ch, "/tiernet.v1.Admin/Plan", bad_utf8.clone()).await;
    check(
        "plan with invalid UTF-8 in the topology".into(),
        r,
        Code::Internal,
        "UTF-8",
    )
    .await;
    let r = raw_unary(&admin_ch, "/tiernet.v1.Admin/Validate", bad_utf8).await;
    check(
        "validate with invalid UTF-8 in the topology".into(),
        r,
        Code::Internal,
        "UTF-8",
    )
    .await;
    for (label, bytes) in [
        ("truncated field", vec![0x12, 0xff, 0xff, 0x03, b'a']),
        ("invalid wire type", vec![0x0f, 0x01]),
        (
            "varint overflow",
            vec![
                0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
            ],
        ),
    ] {
        let r = raw_unary(&admin_ch, "/tiernet.v1.Admin/Plan", bytes).await;
        check(
            format!("plan with {label}"),
            r,
            Code::Internal,
            "failed to decode",
        )
        .await;
    }
    let r = raw_unary(&admin_ch, "/tiernet.v1.Admin/Destroy", vec![]).await;
    check("an unknown method".into(), r, Code::Unimplemented, "").await;

    // --- agent streams ---
    let report_msg = |r: AgentReport| Agentish::msg(agent_message::Msg::Report(r));
    let r = agentish
        .talk(vec![report_msg(report.clone())], Duration::from_secs(3))
        .await;
    check(
        "a report before the hello".into(),
        r,
        Code::InvalidArgument,
        "first message must be a hello",
    )
    .await;
    let r = agentish
        .talk(vec![AgentMessage { msg: None }], Duration::from_secs(3))
        .await;
    check(
        "an empty message before the hello".into(),
        r,
        Code::InvalidArgument,
        "first message must be a hello",
    )
    .await;
    let result = |id: u64| {
        Agentish::msg(agent_message::Msg::Result(ApplyResult {
            request_id: id,
            revision: 1,
            ok: true,
            ..Default::default()
        }))
    };
    let r = agentish.talk(vec![result(1)], Duration::from_secs(3)).await;
    check(
        "an apply result before the hello".into(),
        r,
        Code::InvalidArgument,
        "first message must be a hello",
    )
    .await;
    let r = agentish
        .talk(vec![agentish.hello("gw-core")], Duration::from_secs(3))
        .await;
    check(
        "hello as another gateway".into(),
        r,
        Code::PermissionDenied,
        "certificate is for 'gw-his'",
    )
    .await;
    let r = agentish
        .talk(
            vec![agentish.hello(&"g".repeat(1 << 20))],
            Duration::from_secs(3),
        )
        .await;
    check(
        "hello with a 1 MiB gateway name".into(),
        r,
        Code::PermissionDenied,
        "certificate is for 'gw-his'",
    )
    .await;
    let r = agentish
        .talk(vec![agentish.hello("")], Duration::from_secs(3))
        .await;
    check(
        "hello with no gateway".into(),
        r,
        Code::InvalidArgument,
        "names no gateway",
    )
    .await;
    let r = stranger
        .talk(vec![stranger.hello("gw-x")], Duration::from_secs(3))
        .await;
    check(
        "hello from a gateway no revision names".into(),
        r,
        Code::PermissionDenied,
        "not in the current revision",
    )
    .await;
    let r = admin_as_agent
        .talk(vec![admin_as_agent.hello("alice")], Duration::from_secs(3))
        .await;
    check(
        "an admin certificate as an agent".into(),
        r,
        Code::PermissionDenied,
        "not agent",
    )
    .await;
    let r = agentish
        .talk(
            vec![agentish.hello("gw-his"), agentish.hello("gw-his")],
            Duration::from_secs(3),
        )
        .await;
    check(
        "a second hello".into(),
        r,
        Code::InvalidArgument,
        "second hello",
    )
    .await;
    let r = agentish
        .talk(
            vec![agentish.hello("gw-his"), AgentMessage { msg: None }],
            Duration::from_secs(3),
        )
        .await;
    check(
        "an empty message after the hello".into(),
        r,
        Code::InvalidArgument,
        "empty agent message",
    )
    .await;
    for id in [1, 42, u64::MAX] {
        let r = agentish
            .talk(
                vec![agentish.hello("gw-his"), result(id)],
                Duration::from_secs(3),
            )
            .await;
        check(
            format!("an apply result for request {id}"),
            r,
            Code::InvalidArgument,
            "never sent",
        )
        .await;
    }
    let bad_digest = AgentReport {
        state_digest: "z".repeat(100_000),
        ..report.clone()
    };
    let r = agentish
        .talk(
            vec![agentish.hello("gw-his"), report_msg(bad_digest.clone())],
            Duration::from_secs(3),
        )
        .await;
    check(
        "a report with a garbage digest".into(),
        r,
        Code::InvalidArgument,
        "64 hex digits",
    )
    .await;
    let r = agentish
        .talk(
            vec![Agentish::msg(agent_message::Msg::Hello(Hello {
                gateway: "gw-his".into(),
                report: Some(bad_digest),
            }))],
            Duration::from_secs(3),
        )
        .await;
    check(
        "a hello with a garbage digest".into(),
        r,
        Code::InvalidArgument,
        "64 hex digits",
    )
    .await;
    let baseline = |json: String, digest: String| {
        Agentish::msg(agent_message::Msg::Baseline(Baseline {
            state_json: json,
            state_digest: digest,
        }))
    };
    let sha = |s: &str| {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(s.as_bytes()))
    };
    let garbage = String::from_utf8_lossy(&noise(7, 10_000)).into_owned();
    for (label, json, digest, why) in [
        (
            "garbage state_json, wrong digest",
            garbage.clone(),
            "00".repeat(32),
            "digest mismatch",
        ),
        (
            "garbage state_json, right digest",
            garbage.clone(),
            sha(&garbage),
            "does not decode",
        ),
        (
            "JSON of the wrong shape",
            "{\"gateway\": 5}".into(),
            sha("{\"gateway\": 5}"),
            "does not decode",
        ),
        (
            "another gateway's state",
            {
                let (j, _) = tiernet::proto::encode_state(
                    &tiernet::compile::firewall::closed_state("gw-core"),
                );
                j
            },
            {
                let (_, d) = tiernet::proto::encode_state(
                    &tiernet::compile::firewall::closed_state("gw-core"),
                );
                d
            },
            "for gateway 'gw-core'",
        ),
    ] {
        let r = agentish
            .talk(
                vec![agentish.hello("gw-his"), baseline(json, digest)],
                Duration::from_secs(3),
            )
            .await;
        check(
            format!("a baseline with {label}"),
            r,
            Code::InvalidArgument,
            why,
        )
        .await;
    }
    let huge = "x".repeat(20 << 20);
    let r = agentish
        .talk(
            vec![agentish.hello("gw-his"), baseline(huge.clone(), sha(&huge))],
            Duration::from_secs(5),
        )
        .await;
    check(
        "a 20 MiB baseline".into(),
        r,
        Code::OutOfRange,
        "message length too large",
    )
    .await;
    drop(huge);
    let mut hello_bad_utf8 = field(1, &field(1, b"gw-\xffhis"));
    let r = agentish
        .talk_raw(vec![std::mem::take(&mut hello_bad_utf8)])
        .await;
    check(
        "a hello with invalid UTF-8 in the gateway name".into(),
        r,
        Code::Internal,
        "UTF-8",
    )
    .await;
    let r = agentish
        .talk_raw(vec![vec![0x0a, 0xff, 0xff, 0xff, 0x7f]])
        .await;
    check(
        "a truncated hello".into(),
        r,
        Code::Internal,
        "failed to decode",
    )
    .await;

    let r = silent.await.expect("silent stream task");
    check(
        "a stream that never says hello".into(),
        r,
        Code::DeadlineExceeded,
        "no hello",
    )
    .await;

    // Every case: the expected code and a message naming the reason.
    let mut wrong = Vec::new();
    for (label, r, code, why) in &cases {
        match r {
            Err(s) if s.code() == *code && s.message().contains(why) => {}
            other => wrong.push(format!(
                "{label}: expected {code:?} naming '{why}', got {other:?}"
            )),
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} cases answered wrongly:\n{}",
        wrong.len(),
        cases.len(),
        wrong.join("\n")
    );
    assert!(cases.len() >= 50, "{} cases", cases.len());

    // And the controller still works: gw-his's real agent comes back and a change applies.
    let his = agent(&ctl, &pki, "gw-his");
    wait_connected(&mut alice, 2).await;
    apply(&mut alice, &changed_reference(), Some(1))
        .await
        .expect("a good change still applies");
    assert_eq!(his.seen().revision, Some(2));
}
