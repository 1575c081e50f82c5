//! Little-endian byte writing and reading for checkpoints (the layout is in docs/training.md).

use ndarray::{Array1, Array2};

use super::net::Layer;

/// First bytes of a checkpoint.
pub const CHECKPOINT_MAGIC: [u8; 8] = *b"MILANCKP";
/// Checkpoint layout version.
pub const CHECKPOINT_VERSION: u32 = 1;

#[derive(Default)]
pub(crate) struct ByteWriter {
    bytes: Vec<u8>,
}

impl ByteWriter {
    pub fn raw(&mut self, bytes: &[u8]) {
        self.bytes.extend_from_slice(bytes);
    }
    pub fn u8(&mut self, v: u8) {
        self.bytes.push(v);
    }
    pub fn u32(&mut self, v: u32) {
        self.raw(&v.to_le_bytes());
    }
    pub fn u64(&mut self, v: u64) {
        self.raw(&v.to_le_bytes());
    }
    pub fn u128(&mut self, v: u128) {
        self.raw(&v.to_le_bytes());
    }
    pub fn f64(&mut self, v: f64) {
        self.raw(&v.to_le_bytes());
    }
    /// `u64` length, then the bytes.
    pub fn blob(&mut self, bytes: &[u8]) {
        self.u64(bytes.len() as u64);
        self.raw(bytes);
    }
    pub fn floats<'a>(&mut self, values: impl Iterator<Item = &'a f32>) {
        for v in values {
            self.raw(&v.to_le_bytes());
        }
    }
    /// `u32` count, then per layer `u32` outputs, `u32` inputs, weights and bias as `f32`.
    pub fn layers(&mut self, layers: &[Layer<f32>]) {
        self.u32(layers.len() as u32);
        for layer in layers {
            self.u32(layer.weights.nrows() as u32);
            self.u32(layer.weights.ncols() as u32);
            self.floats(layer.weights.iter());
            self.floats(layer.bias.iter());
        }
    }
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }
}

pub(crate) struct ByteReader<'a> {
    bytes: &'a [u8],
}

type Read<T> = Result<T, String>;

impl<'a> ByteReader<'a> {
    pub fn new(bytes: &'a [u8]) -> ByteReader<'a> {
        ByteReader { bytes }
    }
    pub fn raw(&mut self, n: usize) -> Read<&'a [u8]> {
        if self.bytes.len() < n {
            return Err("truncated".into());
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Ok(head)
    }
    pub fn array<const N: usize>(&mut self) -> Read<[u8; N]> {
        Ok(self.raw(N)?.try_into().expect("N bytes"))
    }
    pub fn u8(&mut self) -> Read<u8> {
        Ok(self.array::<1>()?[0])
    }
    pub fn u32(&mut self) -> Read<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    pub fn u64(&mut self) -> Read<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    pub fn u128(&mut self) -> Read<u128> {
        Ok(u128::from_le_bytes(self.array()?))
    }
    pub fn f64(&mut self) -> Read<f64> {
        Ok(f64::from_le_bytes(self.array()?))
    }
    pub fn blob(&mut self) -> Read<&'a [u8]> {
        let n = self.u64()?;
        let n = usize::try_from(n).map_err(|_| "length overflows".to_string())?;
        self.raw(n)
    }
    fn floats(&mut self, n: usize) -> Read<Vec<f32>> {
        let bytes = self.raw(n.checked_mul(4).ok_or("length overflows")?)?;
        Ok(bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
            .collect())
    }
    pub fn matrix(&mut self, rows: usize, cols: usize) -> Read<Array2<f32>> {
        let n = rows.checked_mul(cols).ok_or("length overflows")?;
        Array2::from_shape_vec((rows, cols), self.floats(n)?).map_err(|e| e.to_string())
    }
    pub fn vector(&mut self, n: usize) -> Read<Array1<f32>> {
        Ok(Array1::from(self.floats(n)?))
    }
    pub fn layers(&mut self) -> Read<Vec<Layer<f32>>> {
        let count = self.u32()? as usize;
        let mut layers = Vec::with_capacity(count.min(64));
        for _ in 0..count {
            let outputs = self.u32()? as usize;
            let inputs = self.u32()? as usize;
            layers.push(Layer {
                weights: self.matrix(outputs, inputs)?,
                bias: self.vector(outputs)?,
            });
        }
        Ok(layers)
    }
    pub fn finish(&self) -> Read<()> {
        if self.bytes.is_empty() {
            Ok(())
        } else {
            Err(format!("{} unexpected trailing bytes", self.bytes.len()))
        }
    }
}
