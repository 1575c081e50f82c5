//! `npy_codes`: arbitrary bytes as a numpy `.npy` file of codes, read as `index import` and
//! `query --codes` read one.
//!
//! Asserts that `CodesReader` never panics and allocates only what the input holds (run with
//! `-malloc_limit_mb` well below what a lying header could ask for), and that a header it accepts
//! describes the input exactly: the rows it promises are all there, each `bits / 8` bytes, and
//! reading them in batches of varying size (the first input byte picks it) yields exactly that many
//! codes, after which nothing is left.

#![no_main]

use libfuzzer_sys::fuzz_target;
use milan::npy::CodesReader;

fuzz_target!(|data: &[u8]| {
    let batch = data.first().map_or(1, |&b| usize::from(b % 17) + 1);
    let Ok(mut codes) = CodesReader::new(data, data.len() as u64, "fuzz.npy") else {
        return;
    };
    let (rows, bits) = (codes.rows(), codes.bits());
    assert!((8..=1024).contains(&bits) && bits % 8 == 0);
    assert!(rows * u64::from(bits / 8) <= data.len() as u64);
    let mut read = 0u64;
    loop {
        let batch = codes
            .read(batch)
            .expect("rows the header promised are present");
        if batch.is_empty() {
            break;
        }
        assert!(batch.iter().all(|code| code.bits() == bits));
        read += batch.len() as u64;
    }
    assert_eq!(read, rows);
    assert_eq!(codes.remaining(), 0);
});
