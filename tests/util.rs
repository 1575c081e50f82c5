//! Helpers shared by the integration tests: code generators and a brute-force reference.
//!
//! The helpers that run the command line or make features exist with the `cli` feature only;
//! without it, some of the rest serve no module.
#![cfg_attr(not(feature = "cli"), allow(dead_code))]

use std::path::Path;
#[cfg(feature = "cli")]
use std::process::{Command, Output};

use milan::{Code, Hit};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

pub fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

pub fn random_code(rng: &mut ChaCha8Rng, bits: u32) -> Code {
    Code::from_fn(bits, |_| rng.random_bool(0.5)).unwrap()
}

/// A code near `centre`: each bit flipped with probability `flip`.
pub fn near(rng: &mut ChaCha8Rng, centre: &Code, flip: f64) -> Code {
    let bits = centre.as_bitslice();
    Code::from_fn(centre.bits(), |i| bits[i] ^ rng.random_bool(flip)).unwrap()
}

/// `n` codes drawn around `centres` random centres.
pub fn clustered(
    rng: &mut ChaCha8Rng,
    bits: u32,
    n: usize,
    centres: usize,
    flip: f64,
) -> Vec<Code> {
    let centres: Vec<Code> = (0..centres.max(1))
        .map(|_| random_code(rng, bits))
        .collect();
    (0..n)
        .map(|_| {
            let c = &centres[rng.random_range(0..centres.len())];
            near(rng, c, flip)
        })
        .collect()
}

/// Every live `(id, code)` by distance then id, the reference that search must equal.
pub fn brute_force(live: &[(u64, Code)], query: &Code) -> Vec<Hit> {
    let mut hits: Vec<Hit> = live
        .iter()
        .map(|(id, code)| Hit {
            id: *id,
            distance: code.distance(query).unwrap(),
        })
        .collect();
    hits.sort();
    hits
}

pub fn brute_top_k(live: &[(u64, Code)], query: &Code, k: usize) -> Vec<Hit> {
    let mut hits = brute_force(live, query);
    hits.truncate(k);
    hits
}

pub fn brute_radius(live: &[(u64, Code)], query: &Code, radius: u32) -> Vec<Hit> {
    brute_force(live, query)
        .into_iter()
        .filter(|hit| hit.distance <= radius)
        .collect()
}

/// Runs the `milan` binary.
#[cfg(feature = "cli")]
pub fn milan(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_milan"))
        .args(args)
        .output()
        .unwrap()
}

#[cfg(feature = "cli")]
pub fn ok(args: &[&str]) -> String {
    let output = milan(args);
    assert!(
        output.status.success(),
        "milan {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// Runs a command that must fail with `status`; returns its standard error.
#[cfg(feature = "cli")]
pub fn fails(args: &[&str], status: i32) -> String {
    let output = milan(args);
    assert_eq!(
        output.status.code(),
        Some(status),
        "milan {args:?}: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    String::from_utf8(output.stderr).unwrap()
}

/// The JSON that `milan args` wrote to standard output, after checking it exited with `status`.
#[track_caller]
#[cfg(feature = "cli")]
pub fn json_output(args: &[&str], output: &Output, status: i32) -> serde_json::Value {
    assert_eq!(
        output.status.code(),
        Some(status),
        "milan {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// The arguments of `milan extract` from the class folders under `images` into `out`, quietly.
#[cfg(feature = "cli")]
pub fn extract_args<'a>(model: &'a Path, images: &'a Path, out: &'a Path) -> [&'a str; 9] {
    [
        "extract",
        "--model",
        s(model),
        "--images",
        s(images),
        "--label-from-dir",
        "--out",
        s(out),
        "--quiet",
    ]
}

pub fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// Labelled features: `classes` classes of `per_class` items in `dim` dimensions. The class shows
/// only in the first `signal` dimensions (centres drawn with standard deviation 1, items spread
/// `spread` around them); the other dimensions are class-free noise of standard deviation
/// `noise`, which misleads a random projection but not a trained head.
#[cfg(feature = "cli")]
pub fn clustered_features(
    seed: u64,
    classes: usize,
    per_class: usize,
    dim: usize,
    signal: usize,
    spread: f32,
    noise: f32,
) -> (ndarray::Array2<f32>, Vec<i64>) {
    use rand_distr::{Distribution, StandardNormal};
    let mut rng = rng(seed);
    let centres: Vec<Vec<f32>> = (0..classes)
        .map(|_| {
            (0..signal)
                .map(|_| StandardNormal.sample(&mut rng))
                .collect()
        })
        .collect();
    let mut features = ndarray::Array2::<f32>::zeros((classes * per_class, dim));
    let mut labels = Vec::with_capacity(classes * per_class);
    for i in 0..classes * per_class {
        // Classes interleaved, so that data-set order is not class order.
        let class = i % classes;
        for j in 0..dim {
            let z: f32 = StandardNormal.sample(&mut rng);
            features[[i, j]] = if j < signal {
                centres[class][j] + spread * z
            } else {
                noise * z
            };
        }
        labels.push(class as i64 + 100);
    }
    (features, labels)
}

/// Writes `codes` as a packed `uint8 [n, bits / 8]` .npy file.
pub fn write_codes(path: &Path, codes: &[Code]) {
    let width = codes[0].as_bytes().len();
    let bytes: Vec<u8> = codes.iter().flat_map(|c| c.as_bytes().to_vec()).collect();
    ndarray_npy::write_npy(
        path,
        &ndarray::Array2::from_shape_vec((codes.len(), width), bytes).unwrap(),
    )
    .unwrap();
}

/// The number of live codes `milan index info` reports.
#[cfg(feature = "cli")]
pub fn len_of(dir: &Path) -> u64 {
    let info: serde_json::Value =
        serde_json::from_str(&ok(&["index", "info", s(dir), "--json"])).unwrap();
    info["len"].as_u64().unwrap()
}

/// After an import of `codes` in batches of `batch` was killed: the index holds whole batches
/// only, in row order, and passes its check. Returns how many codes it holds.
pub fn assert_whole_batches(index: &mut milan::Index, codes: &[Code], batch: u64) -> u64 {
    let len = index.len();
    assert_eq!(len % batch, 0, "{len} codes: a partial batch survived");
    let report = index.verify().unwrap();
    assert!(report.is_ok(), "{report:?}");
    let reader = index.reader().unwrap();
    for id in (0..len).step_by(997) {
        assert_eq!(reader.code(id).unwrap(), codes[id as usize]);
    }
    len
}

/// Runs `milan args` and kills it with SIGKILL after `delay`; returns whether it had finished.
#[cfg(feature = "cli")]
pub fn kill_after(args: &[&str], delay: std::time::Duration) -> bool {
    let mut child = Command::new(env!("CARGO_BIN_EXE_milan"))
        .args(args)
        .spawn()
        .unwrap();
    std::thread::sleep(delay);
    let finished = child.try_wait().unwrap().is_some();
    child.kill().ok();
    child.wait().unwrap();
    finished
}
