//! The server's request parser: arbitrary bytes from a client, in arbitrary pieces.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    chinwag_fuzz::check(&chinwag_fuzz::server, data);
});
