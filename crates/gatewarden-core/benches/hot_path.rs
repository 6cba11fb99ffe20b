//! Micro-benchmarks of the per-RPC work in the core, each next to the baseline it is judged
//! against in the same run: the raw awc client of `gatewarden-bench` (a `format!`ed frame, a
//! full `Value` parse, a `HashMap` of send times, decimal ids) or the code it replaced.
//!
//! `cargo bench -p gatewarden-core --bench hot_path` (add `-- --quick` for a short pass).
//! `cargo test -p gatewarden-core --benches` runs every case once, as CI does.

use std::collections::HashMap;
use std::hint::black_box;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use gatewarden_core::frame::{
    decode_inbound_for, decode_success_reply, encode_request, write_request,
};
use gatewarden_core::rpc::{PendingRpcs, RequestId, RequestIdHashing};
use serde_json::{json, Value};

/// The calls in flight of the end-to-end target (issue: 256 in flight).
const IN_FLIGHT: u64 = 256;

fn request_id(n: u64) -> RequestId {
    // Spread like v4 UUIDs: the bench must not hand the hasher sequential keys.
    RequestId::from_u128(u128::from(n).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835))
}

/// The request frame: the writer the connection uses, the serde derive it replaced, and the
/// raw client's `format!`.
fn request_frame(c: &mut Criterion) {
    #[derive(serde::Serialize)]
    struct Request<'a> {
        #[serde(rename = "type")]
        frame_type: &'static str,
        id: &'a str,
        method: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        params: Option<&'a Value>,
    }
    let params = json!({ "n": 123_456 });
    let id = request_id(7);
    let mut group = c.benchmark_group("request_frame");
    group.bench_function("write_request", |b| {
        let mut out = Vec::with_capacity(4096);
        b.iter(|| {
            out.clear();
            let mut buf = [0; RequestId::LEN];
            let text = id.encode(&mut buf);
            let _ = write_request(&mut out, text, "echo", Some(black_box(&params)));
            black_box(out.len())
        })
    });
    group.bench_function("encode_request", |b| {
        b.iter(|| {
            let mut buf = [0; RequestId::LEN];
            let text = id.encode(&mut buf);
            black_box(encode_request(text, "echo", Some(black_box(&params))))
        })
    });
    group.bench_function("baseline_serde_derive", |b| {
        b.iter(|| {
            let mut buf = [0; RequestId::LEN];
            let text = id.encode(&mut buf);
            let request = Request {
                frame_type: "req",
                id: text,
                method: "echo",
                params: Some(black_box(&params)),
            };
            black_box(serde_json::to_string(&request).unwrap_or_default())
        })
    });
    group.bench_function("baseline_raw_format", |b| {
        let n = black_box(123_456u64);
        b.iter(|| {
            black_box(format!(
                r#"{{"type":"req","id":"{n}","method":"echo","params":{{"n":{n}}}}}"#
            ))
        })
    });
    group.finish();
}

/// A successful reply: the connection's hot path, the general decode (with its own fast path
/// for replies in any member order) and the raw client's `Value` parse.
fn reply_decode(c: &mut Criterion) {
    let id = request_id(7).to_string();
    let reply = format!(r#"{{"type":"res","id":"{id}","ok":true,"payload":{{"n":123456}}}}"#);
    let mut group = c.benchmark_group("reply_decode");
    group.bench_function("decode_success_reply", |b| {
        b.iter(|| black_box(decode_success_reply(black_box(&reply))))
    });
    group.bench_function("decode_inbound_for", |b| {
        b.iter(|| black_box(decode_inbound_for(black_box(&reply), |other| other == id)))
    });
    group.bench_function("baseline_raw_value_parse", |b| {
        b.iter(|| {
            let value: Value = serde_json::from_str(black_box(&reply)).unwrap_or_default();
            black_box(value.get("id").and_then(Value::as_str).map(str::len))
        })
    });
    group.finish();
}

/// One call's bookkeeping with 256 others waiting, in the steady state of a closed loop: insert
/// the newest, resolve the oldest. Against the raw client's `HashMap` of send times.
fn pending_table(c: &mut Criterion) {
    let mut group = c.benchmark_group("pending_256");
    group.bench_function("pending_rpcs", |b| {
        let mut table: PendingRpcs<(), RequestId, RequestIdHashing> = PendingRpcs::empty();
        for n in 0..IN_FLIGHT {
            let _ = table.insert(request_id(n), "echo".to_string(), 30_000 + n, ());
        }
        let mut next = IN_FLIGHT;
        b.iter_batched(
            || "echo".to_string(),
            |method| {
                let _ = table.insert(request_id(next), method, 30_000 + next, ());
                let answered = table.resolve(&request_id(next - IN_FLIGHT));
                next += 1;
                black_box(answered)
            },
            BatchSize::SmallInput,
        )
    });
    group.bench_function("baseline_raw_hashmap", |b| {
        let mut sent_at: HashMap<u64, Instant> = HashMap::new();
        let now = Instant::now();
        for n in 0..IN_FLIGHT {
            sent_at.insert(n, now);
        }
        let mut next = IN_FLIGHT;
        b.iter(|| {
            sent_at.insert(next, now);
            let answered = sent_at.remove(&(next - IN_FLIGHT));
            next += 1;
            black_box(answered)
        })
    });
    group.finish();
}

/// The id of one call written and read back: UUID text against the raw client's decimal.
fn request_ids(c: &mut Criterion) {
    let mut group = c.benchmark_group("request_id");
    group.bench_function("uuid_text", |b| {
        let mut n = 0u64;
        b.iter(|| {
            n += 1;
            let mut buf = [0; RequestId::LEN];
            let text = request_id(n).encode(&mut buf);
            black_box(RequestId::parse(black_box(text)))
        })
    });
    group.bench_function("baseline_raw_decimal", |b| {
        let mut n = 0u64;
        b.iter(|| {
            n += 1;
            let text = n.to_string();
            black_box(black_box(text.as_str()).parse::<u64>().ok())
        })
    });
    group.finish();
}

criterion_group!(
    hot_path,
    request_frame,
    reply_decode,
    pending_table,
    request_ids
);
criterion_main!(hot_path);
