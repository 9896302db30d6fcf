//! The cltab parser on any text: errors, never a panic; a valid cltab's
//! shared parse under its own settings gives the same entries.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("/fuzz/cltab");
    if let Ok(tab) = clinit::cltab::parse(path, text) {
        let again = clinit::cltab::parse_shared(path, text, &tab.settings)
            .expect("a valid cltab parses under its own settings");
        assert_eq!(again.entries, tab.entries);
    }
    let _ = clinit::cltab::scan_settings(text);
});
