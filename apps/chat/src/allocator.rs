//! The `chinwag` binary's global allocator: mimalloc, called the way each
//! allocation needs.
//!
//! The `mimalloc` crate's allocator passes every allocation to
//! `mi_malloc_aligned`, whatever its alignment. mimalloc then finds that an
//! alignment of at most 16 bytes and at most the size is met by its plain
//! allocation anyway (its blocks up to that alignment are aligned to their
//! size class), but only after two wrapper calls: in the echo's profile about
//! 29 instructions per message went to those wrappers, around the 10 that
//! take a block off the page. This allocator makes the plain call for such
//! layouts, as the standard library's `System` does with `malloc`, and the
//! aligned one for the rest.

use libmimalloc_sys as ffi;
use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

/// The largest alignment mimalloc's plain calls guarantee for an allocation at
/// least that large (`MI_MAX_ALIGN_SIZE` on 64-bit targets; 8 would be enough on
/// 32-bit ones, and 16 is never wrong there since such layouts take the
/// aligned path).
const PLAIN_ALIGN: usize = 16;

/// mimalloc as the global allocator (see the module's documentation).
#[derive(Debug, Clone, Copy, Default)]
pub struct MiMalloc;

/// A block for `layout` from mimalloc's `plain` entry point where it gives the
/// alignment, else from its `aligned` one.
///
/// # Safety
/// `plain` and `aligned` are a pair of mimalloc's allocation calls (size, and
/// size and alignment); a `Layout`'s alignment is always a power of two, as
/// the aligned calls require, and mimalloc allows a size of zero.
#[allow(unsafe_code)]
#[inline(always)]
unsafe fn allocate(
    layout: Layout,
    plain_call: unsafe extern "C" fn(usize) -> *mut c_void,
    aligned_call: unsafe extern "C" fn(usize, usize) -> *mut c_void,
) -> *mut u8 {
    // SAFETY: FFI calls with the arguments the caller vouched for.
    unsafe {
        if plain(layout.size(), layout.align()) {
            plain_call(layout.size()).cast()
        } else {
            aligned_call(layout.size(), layout.align()).cast()
        }
    }
}

/// Whether mimalloc's plain call returns memory aligned as `align` asks for a
/// block of `size` bytes.
#[inline(always)]
fn plain(size: usize, align: usize) -> bool {
    align <= PLAIN_ALIGN && align <= size
}

// SAFETY: every path returns memory from mimalloc that satisfies the layout
// (the plain calls only where mimalloc guarantees the alignment, see `plain`),
// null on failure, and frees or reallocates only what it returned: mimalloc's
// `mi_free` and `mi_realloc*` take a block from any of its allocation calls.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for MiMalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as `allocate` requires.
        unsafe { allocate(layout, ffi::mi_malloc, ffi::mi_malloc_aligned) }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as `allocate` requires.
        unsafe { allocate(layout, ffi::mi_zalloc, ffi::mi_zalloc_aligned) }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: the caller passes a block this allocator returned.
        unsafe { ffi::mi_free(ptr.cast::<c_void>()) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller passes a block this allocator returned with `layout`;
        // the new block keeps `layout`'s alignment, by the same rule as `alloc`.
        unsafe {
            if plain(new_size, layout.align()) {
                ffi::mi_realloc(ptr.cast::<c_void>(), new_size).cast()
            } else {
                ffi::mi_realloc_aligned(ptr.cast::<c_void>(), new_size, layout.align()).cast()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every size up to a few KiB with every alignment up to a page: the block
    /// is aligned as asked, writable over its whole size, zeroed when asked, and
    /// keeps its bytes and alignment across a reallocation. A plain call where
    /// mimalloc does not guarantee the alignment fails here.
    #[test]
    #[allow(unsafe_code)]
    fn blocks_are_aligned_sized_and_kept_across_reallocation() {
        let sizes = (1..=512).chain([640, 1000, 1024, 2048, 4096, 5000, 65536]);
        for size in sizes {
            for align in [1, 2, 4, 8, 16, 32, 64, 128, 4096] {
                let layout = Layout::from_size_align(size, align).expect("valid layout");
                // SAFETY: a non-zero size; each block is freed with its layout.
                unsafe {
                    let zeroed = MiMalloc.alloc_zeroed(layout);
                    assert!(!zeroed.is_null());
                    assert_eq!(zeroed as usize % align, 0, "zeroed {size} aligned {align}");
                    assert!(std::slice::from_raw_parts(zeroed, size).iter().all(|&b| b == 0));
                    MiMalloc.dealloc(zeroed, layout);

                    let block = MiMalloc.alloc(layout);
                    assert!(!block.is_null());
                    assert_eq!(block as usize % align, 0, "size {size} aligned {align}");
                    for i in 0..size {
                        *block.add(i) = i as u8;
                    }
                    let grown_size = size * 3 + 7;
                    let grown = MiMalloc.realloc(block, layout, grown_size);
                    assert!(!grown.is_null());
                    assert_eq!(grown as usize % align, 0, "grown {size} aligned {align}");
                    assert!((0..size).all(|i| *grown.add(i) == i as u8));
                    let grown_layout = Layout::from_size_align(grown_size, align).expect("valid layout");
                    let shrunk = MiMalloc.realloc(grown, grown_layout, size.div_ceil(2));
                    assert_eq!(shrunk as usize % align, 0, "shrunk {size} aligned {align}");
                    assert!((0..size.div_ceil(2)).all(|i| *shrunk.add(i) == i as u8));
                    MiMalloc.dealloc(shrunk, Layout::from_size_align(size.div_ceil(2), align).expect("valid"));
                }
            }
        }
    }
}
