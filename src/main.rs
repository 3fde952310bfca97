fn main() -> std::process::ExitCode {
    tracklayer::cli::main()
}
