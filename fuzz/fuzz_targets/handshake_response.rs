//! The client's response parser: arbitrary bytes from a server, in arbitrary pieces.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    chinwag_fuzz::check(&chinwag_fuzz::client, data);
});
