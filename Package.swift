// swift-tools-version: 6.0
import PackageDescription

let package = Package(
    name: "Claire",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "merge-tool", targets: ["MergeTool"]),
        .executable(name: "claire-bench", targets: ["ClaireBench"]),
        .library(name: "Checkpoints", targets: ["Checkpoints"]),
        .library(name: "Merging", targets: ["Merging"]),
        .library(name: "Statistics", targets: ["Statistics"]),
        .library(name: "Training", targets: ["Training"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.2.2"),
    ],
    targets: [
        .systemLibrary(
            name: "CZstd", path: "Sources/CZstd", pkgConfig: "libzstd",
            providers: [.apt(["libzstd-dev"]), .brew(["zstd"])]),
        .systemLibrary(
            name: "COpenBLAS", path: "Sources/COpenBLAS", pkgConfig: "openblas",
            providers: [.apt(["libopenblas-dev"]), .brew(["openblas"])]),
        .target(name: "Checkpoints", dependencies: ["CZstd", "COpenBLAS"]),
        .target(
            name: "Merging",
            dependencies: ["Checkpoints", "COpenBLAS", .product(name: "Yams", package: "Yams")]),
        .target(name: "Statistics", dependencies: ["Checkpoints", "Merging"]),
        .target(name: "Training", dependencies: ["Checkpoints", "COpenBLAS"]),
        .executableTarget(
            name: "MergeTool",
            dependencies: [
                "Checkpoints", "Merging", "Statistics", "Training",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]),
        .executableTarget(
            name: "ClaireBench", dependencies: ["Checkpoints", "Merging"], path: "Benchmarks/ClaireBench"),
        .testTarget(name: "CheckpointsTests", dependencies: ["Checkpoints"]),
        // A plain reference implementation of every merge method, shared by the
        // engine's differential tests and its fuzz target.
        // Optimized even in debug builds, so the sweep over large tensors stays quick.
        .target(
            name: "MergeReference", dependencies: ["Checkpoints", "Merging"], path: "Tests/MergeReference",
            swiftSettings: [.unsafeFlags(["-O"])]),
        .testTarget(name: "MergingTests", dependencies: ["Merging", "MergeReference"]),
        .testTarget(name: "StatisticsTests", dependencies: ["Checkpoints", "Merging", "Statistics"]),
        // The merge engine's fuzz target (scripts/fuzz.sh merge builds it with the fuzzer
        // sanitizer and -D CLAIRE_FUZZ); built normally it replays inputs given as arguments.
        .executableTarget(
            name: "MergeFuzz", dependencies: ["Checkpoints", "Merging", "MergeReference"], path: "Fuzz/Merge",
            swiftSettings: [.unsafeFlags(["-parse-as-library"])]),
        .testTarget(name: "TrainingTests", dependencies: ["Training"]),
        .testTarget(name: "MergeToolTests", dependencies: ["MergeTool"]),
    ]
)
