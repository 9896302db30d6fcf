fn main() {
    eprintln!("clinit: the daemon is not built yet; see README.md");
    std::process::exit(1);
}
