//! The parsers remote administration added: `--host`/`listen` addresses,
//! `--not-before`/`--not-after` dates, and the identity of a client
//! certificate (x509 DER, here any bytes): never a panic; an address that
//! parses prints back to one that parses the same.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = clinit::tls::identity(data);
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let _ = clinit::tls::parse_date(s);
    for (parsed, zero_ok) in [
        (clinit::tls::parse_host(s), false),
        (clinit::tls::parse_listen(s), true),
    ] {
        if let Ok((host, port)) = parsed {
            assert!(zero_ok || port != 0);
            let again = if host.contains(':') {
                format!("[{host}]:{port}")
            } else {
                format!("{host}:{port}")
            };
            let back = if zero_ok {
                clinit::tls::parse_listen(&again)
            } else {
                clinit::tls::parse_host(&again)
            };
            assert_eq!(back, Ok((host, port)), "{s:?} -> {again:?}");
        }
    }
});
