//! The schedule parser (BOS forms and cron expressions) on any text, and
//! the next run of what it accepts: never a panic, never a time before the
//! one asked after.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(s) = clinit::schedule::Schedule::parse(text) {
        let after = 1_796_000_000;
        if let Some(next) = s.next_after_in(after, &chrono::Utc) {
            assert!(next > after, "{text:?}: {next} not after {after}");
        }
    }
});
