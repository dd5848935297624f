//! `serve-overhead MODEL_DIR [THREADS]`: what HTTP costs. The same requests (greedy, 64 new
//! tokens, different chat prompts) at 1 and 16 at a time, through the engine directly and
//! through `cocoon serve`'s server in the same process over 127.0.0.1 (streamed, so the time
//! to the first token is seen by the client), alternating, in one run. Prints one JSON line
//! per path and concurrency, and the ratios.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cocoon_engine::{Engine, EngineConfig, Event, Request};
use cocoon_runtime::notary::Attestation;
use cocoon_runtime::{PinnedModel, Runtime, SamplingParams};
use cocoon_serve::{ServeOptions, Server};

const TOKENS: u32 = 64;

fn question(i: usize) -> String {
    format!("Question {i}: name a colour and explain why it is your favourite.")
}

/// One request through the engine: (time to first piece, generated tokens).
fn direct(engine: &Engine, i: usize) -> (Duration, u64) {
    let ids = engine
        .model()
        .prompt_ids(&question(i), false)
        .expect("prompt");
    let t = Instant::now();
    let params = SamplingParams {
        max_tokens: TOKENS,
        ..Default::default()
    };
    let mut h = engine.submit(Request::new(ids, params)).expect("submit");
    let mut first = None;
    while let Some(e) = h.blocking_next() {
        match e {
            Event::Piece(_) => {
                first.get_or_insert(t.elapsed());
            }
            Event::Done(g) => {
                let g = g.expect("generation");
                return (first.unwrap_or(t.elapsed()), g.output_ids.len() as u64);
            }
        }
    }
    panic!("stream ended early")
}

/// One streamed request over HTTP/1.1: (time to the first content chunk, completion tokens).
fn over_http(addr: SocketAddr, i: usize) -> (Duration, u64) {
    let body =
        serde_json::json!({"model": "m", "messages": [{"role": "user", "content": question(i)}],
        "max_tokens": TOKENS, "stream": true, "stream_options": {"include_usage": true}})
        .to_string();
    let t = Instant::now();
    let mut s = TcpStream::connect(addr).expect("connect");
    write!(s, "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()).expect("send");
    let mut first = None;
    let mut tokens = 0;
    for line in BufReader::new(s).lines() {
        let line = line.expect("read");
        let Some(json) = line.strip_prefix("data: {") else {
            continue;
        };
        let v: serde_json::Value = serde_json::from_str(&format!("{{{json}")).expect("chunk");
        if v["choices"][0]["delta"]["content"]
            .as_str()
            .is_some_and(|c| !c.is_empty())
        {
            first.get_or_insert(t.elapsed());
        }
        if let Some(n) = v["usage"]["completion_tokens"].as_u64() {
            tokens = n;
        }
    }
    (first.unwrap_or(t.elapsed()), tokens)
}

/// Runs `n` requests `concurrency` at a time: (aggregate tokens/s, median time to first token).
fn load(
    concurrency: usize,
    n: usize,
    one: &(dyn Fn(usize) -> (Duration, u64) + Sync),
) -> (f64, f64) {
    let t = Instant::now();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..concurrency {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= n {
                    break;
                }
                let r = one(i);
                results.lock().expect("lock").push(r);
            });
        }
    });
    let wall = t.elapsed().as_secs_f64();
    let r = results.into_inner().expect("lock");
    let tokens: u64 = r.iter().map(|x| x.1).sum();
    let mut ttft: Vec<f64> = r.iter().map(|x| x.0.as_secs_f64() * 1e3).collect();
    ttft.sort_by(f64::total_cmp);
    (tokens as f64 / wall, ttft[ttft.len() / 2])
}

fn main() {
    let (dir, threads) = cocoon_bench::model_and_threads();
    let pin = PinnedModel::read(&dir, None).expect("model").pin();
    let engine = Arc::new(
        Engine::start(
            Runtime::open_cpu(&dir, &pin, threads, None).expect("open"),
            EngineConfig::default(),
        )
        .expect("engine"),
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio");
    let server = rt
        .block_on(Server::bind(
            Arc::clone(&engine),
            Attestation::None,
            ServeOptions {
                listen: SocketAddr::from(([127, 0, 0, 1], 0)),
                model_name: "m".into(),
                ..Default::default()
            },
        ))
        .expect("bind");
    let addr = server.local_addr().expect("addr");
    rt.spawn(server.serve(std::future::pending()));
    // Warm both paths once.
    direct(&engine, 0);
    over_http(addr, 0);
    for (concurrency, n) in [(1usize, 16usize), (16, 32)] {
        let mut lib = Vec::new();
        let mut http = Vec::new();
        for _ in 0..2 {
            lib.push(load(concurrency, n, &|i| direct(&engine, i)));
            http.push(load(concurrency, n, &|i| over_http(addr, i)));
        }
        let best = |v: &[(f64, f64)]| {
            let tps = v.iter().map(|x| x.0).fold(0.0, f64::max);
            let ttft = v.iter().map(|x| x.1).fold(f64::INFINITY, f64::min);
            (tps, ttft)
        };
        let (lt, lf) = best(&lib);
        let (ht, hf) = best(&http);
        println!(
            "{}",
            serde_json::json!({"concurrency": concurrency, "requests": n, "threads": threads,
                "library_tokens_per_s": lt, "http_tokens_per_s": ht, "http_over_library": ht / lt,
                "library_ttft_p50_ms": lf, "http_ttft_p50_ms": hf, "ttft_difference_ms": hf - lf})
        );
    }
}
