// swift-tools-version: 6.0
// Benchmark programs for Claire. They print figures; nothing here is a test.
// Run: swift run -c release --package-path Benchmarks gguf-bench
import PackageDescription

let package = Package(
    name: "ClaireBenchmarks",
    platforms: [.macOS(.v13)],
    dependencies: [.package(name: "Claire", path: "..")],
    targets: [
        .executableTarget(
            name: "GGUFBench", dependencies: [.product(name: "Checkpoints", package: "Claire")],
            path: "Sources/GGUFBench"),
    ]
)
