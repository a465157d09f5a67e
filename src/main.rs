fn main() -> std::process::ExitCode {
    streamforge::cli::main()
}
