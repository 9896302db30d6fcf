//! The UserList reader on any text: never a panic, no blank or comment
//! line kept, every entry trimmed. (Bytes that are not UTF-8 make the
//! file unreadable, which `read_userlist` reports before parsing.)
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for u in clinit::daemon::policy::parse_userlist(text) {
        assert!(!u.is_empty() && !u.starts_with('#') && u.trim() == u);
    }
});
