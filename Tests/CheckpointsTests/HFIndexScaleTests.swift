import Foundation
import Testing
@testable import Checkpoints

/// An index naming tens of thousands of shards is handled in one hashed pass
/// (it was searched once per entry, 15 s for 80,000 entries); the rules stay the same.
@Suite struct HFIndexScaleTests {
    @Test func eightyThousandShardsAreCheckedInNameOrder() throws {
        let folder = temporaryFolder()
        let entries = (0..<80_000).map { i in "\"t\(i)\":\"shard-\(String(79_999 - i)).safetensors\"" }
        let index = "{\"metadata\":{},\"weight_map\":{" + entries.joined(separator: ",") + "}}"
        try index.write(toFile: folder + "/" + HFFolder.indexFileName, atomically: true, encoding: .utf8)
        // Shards are opened in sorted name order, so the first missing one is the smallest name.
        #expect(throws: CheckpointError.folder(file: folder + "/" + HFFolder.indexFileName,
                                               problem: .missingShard(shard: "shard-0.safetensors"))) {
            _ = try HFFolder.open(folder)
        }
    }
}
