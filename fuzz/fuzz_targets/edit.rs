//! The cltab editor (create and delete): never a panic; an entry inserted
//! into a text ending with a line end and removed again gives the text
//! back, byte for byte.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // Removing any tag the text names never panics.
    for tag in ["a", "web", "fuzz-new"] {
        let _ = clinit::cltab::edit::remove_entry(text, tag);
    }
    if text.contains("fuzz-new") || !(text.is_empty() || text.ends_with('\n')) {
        return;
    }
    let lines = vec![
        "web:fuzz-new:1:once:true".to_string(),
        ":fuzz-new::stop_signal:TERM".to_string(),
    ];
    let created = clinit::cltab::edit::insert_entry(text, "web", &lines);
    let back = clinit::cltab::edit::remove_entry(&created, "fuzz-new").expect("inserted");
    assert_eq!(back, text);
});
