//! Arbitrary bytes as the protobuf messages the controller and the agents receive, and
//! every decoded one through the pure parts of its handling: a `Desired` state's JSON into
//! a `GatewayState`, its nftables table encoded and decoded again (what the agent's
//! reconciler does before it touches the kernel), a plan against an empty gateway, the
//! rendered script and the controller's diff; a topology request through validation and
//! compilation. Nothing may panic or hang.
//!
//! The first byte picks the message type; the rest is the encoded message.
//!   cargo fuzz run proto            (stable: RUSTC_BOOTSTRAP=1, see tests/corpus/FUZZING.md)
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use sha2::{Digest, Sha256};
use tiernet::compile::GatewayState;
use tiernet::proto::v1::*;

fn today() -> chrono::NaiveDate {
    chrono::NaiveDate::from_ymd_opt(2026, 6, 1).expect("date")
}

/// The agent's side of a `Desired`: decode (the digest as announced, then as computed so the
/// JSON decoder is reached), then the reconciler's pure steps.
fn desired(d: &Desired) {
    let _ = tiernet::proto::decode_state(&d.state_json, &d.state_digest);
    let digest = hex::encode(Sha256::digest(d.state_json.as_bytes()));
    if let Ok(state) = tiernet::proto::decode_state(&d.state_json, &digest) {
        gateway_state(&state);
    }
}

fn gateway_state(state: &GatewayState) {
    let _ = tiernet::proto::encode_state(state);
    if let Ok(canon) = tiernet::dataplane::nft::NftSession::canonical(&state.table) {
        let observed = tiernet::plan::observed::Observed::default();
        let _ = tiernet::plan::plan(state, &canon, &observed);
    }
    let _ = tiernet::nftables::text::render_replace(&state.table);
    let _ = tiernet::controller::diff::gateway_changes(None, Some(state));
}

/// The controller's side of an admin request carrying a topology: what `Validate`, `Plan`
/// and `Apply` do before anything is stored or sent.
fn topology(name: &str, text: &str) {
    let loaded = tiernet::topology::load::check(name, text, today());
    let _ = loaded.report();
    if let Ok(gateways) = tiernet::controller::rollout::compile(name, text, today()) {
        for g in &gateways {
            let (json, digest) = tiernet::proto::encode_state(g);
            let back = tiernet::proto::decode_state(&json, &digest).expect("own state decodes");
            assert_eq!(&back, g, "a state survives the wire");
        }
        let _ = tiernet::controller::diff::per_gateway(&[], &gateways);
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&kind, bytes)) = data.split_first() else {
        return;
    };
    match kind % 8 {
        0 => {
            if let Ok(m) = ControllerMessage::decode(bytes) {
                if let Some(controller_message::Msg::Desired(d)) = &m.msg {
                    desired(d);
                }
            }
        }
        1 => {
            // What the controller's read loop does with each kind: formatting and JSON only.
            if let Ok(m) = AgentMessage::decode(bytes) {
                match m.msg {
                    Some(agent_message::Msg::Drift(d)) => {
                        let _ = serde_json::json!({
                            "at_ms": d.at_ms, "cause": d.cause, "expected": d.expected,
                            "notices": d.notices, "action": d.action, "latency_ms": d.latency_ms,
                        })
                        .to_string();
                    }
                    Some(agent_message::Msg::Audit(a)) => {
                        let _ = serde_json::json!({
                            "at_ms": a.at_ms, "flow": a.flow, "source": a.source,
                            "destination": a.destination, "protocol": a.protocol, "port": a.port,
                        })
                        .to_string();
                    }
                    Some(other) => {
                        let _ = format!("{other:?}");
                    }
                    None => {}
                }
            }
        }
        2 => {
            if let Ok(r) = TopologyRequest::decode(bytes) {
                topology(&r.name, &r.topology);
            }
        }
        3 => {
            if let Ok(r) = ApplyRequest::decode(bytes) {
                topology(&r.name, &r.topology);
            }
        }
        4 => {
            // The state JSON straight, without the protobuf around it.
            if let Ok(json) = std::str::from_utf8(bytes) {
                if let Ok(state) = serde_json::from_str::<GatewayState>(json) {
                    gateway_state(&state);
                }
            }
        }
        5 => {
            let _ = RollbackRequest::decode(bytes);
            let _ = EventsRequest::decode(bytes);
        }
        6 => {
            let _ = Desired::decode(bytes).map(|d| desired(&d));
        }
        _ => {
            let _ = AgentReport::decode(bytes);
            let _ = ApplyResult::decode(bytes);
        }
    }
});
