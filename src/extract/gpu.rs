//! The GPU's memory, as the CUDA runtime reports it, for choosing a batch size and for reports.
//!
//! milan links no CUDA library: the CUDA runtime is the one ONNX Runtime's CUDA provider has
//! already loaded into the process, looked up by name without loading anything new. Without a
//! GPU session there is none, and every answer is `None`.

/// A GPU's memory in bytes, for every process together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GpuMemory {
    /// Free now.
    pub free: u64,
    /// The device's total.
    pub total: u64,
}

impl GpuMemory {
    /// In use now, by every process.
    pub fn used(&self) -> u64 {
        self.total.saturating_sub(self.free)
    }
}

/// The CUDA runtime's names, newest first: ONNX Runtime 1.31's CUDA build uses CUDA 13.
#[cfg(unix)]
const CUDA_RUNTIME: [&std::ffi::CStr; 2] = [c"libcudart.so.13", c"libcudart.so.12"];

/// The memory of CUDA device `device`, when a CUDA runtime is loaded and answers.
#[cfg(unix)]
pub fn memory(device: i32) -> Option<GpuMemory> {
    type SetDevice = unsafe extern "C" fn(i32) -> i32;
    type MemGetInfo = unsafe extern "C" fn(*mut usize, *mut usize) -> i32;
    let library = CUDA_RUNTIME.iter().find_map(|name| {
        // SAFETY: RTLD_NOLOAD only looks up a library already loaded; nothing is initialised.
        let handle = unsafe { libc::dlopen(name.as_ptr(), libc::RTLD_NOW | libc::RTLD_NOLOAD) };
        (!handle.is_null()).then_some(handle as usize)
    })?;
    // The device is selected on a thread of its own, so that the caller's current device (which
    // ONNX Runtime may rely on) is left as it was.
    std::thread::spawn(move || {
        let handle = library as *mut libc::c_void;
        // SAFETY: `handle` came from dlopen above and stays open (it is never closed, and the
        // library was loaded before); the symbols have the CUDA runtime's documented C types.
        unsafe {
            let set_device = libc::dlsym(handle, c"cudaSetDevice".as_ptr());
            let mem_get_info = libc::dlsym(handle, c"cudaMemGetInfo".as_ptr());
            if set_device.is_null() || mem_get_info.is_null() {
                return None;
            }
            let set_device: SetDevice = std::mem::transmute(set_device);
            let mem_get_info: MemGetInfo = std::mem::transmute(mem_get_info);
            let (mut free, mut total) = (0usize, 0usize);
            (set_device(device) == 0 && mem_get_info(&mut free, &mut total) == 0).then_some(
                GpuMemory {
                    free: free as u64,
                    total: total as u64,
                },
            )
        }
    })
    .join()
    .ok()
    .flatten()
}

/// No CUDA runtime is looked for on this platform.
#[cfg(not(unix))]
pub fn memory(_device: i32) -> Option<GpuMemory> {
    None
}
