//! The UserList reader on any file: never a panic, no blank or comment
//! line kept.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = std::env::temp_dir().join(format!("clinit-fuzz-userlist-{}", std::process::id()));
    if std::fs::write(&dir, data).is_err() {
        return;
    }
    if let Ok(users) = clinit::daemon::policy::read_userlist(&dir) {
        for u in users {
            assert!(!u.is_empty() && !u.starts_with('#') && u.trim() == u);
        }
    }
});
