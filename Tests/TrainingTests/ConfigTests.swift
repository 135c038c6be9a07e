import Checkpoints
import Testing
@testable import Training

struct ConfigTests {
    static let valid = """
        {"architectures":["LlamaForCausalLM"],"hidden_size":16,"num_hidden_layers":1,"num_attention_heads":4,
        "num_key_value_heads":2,"intermediate_size":8,"vocab_size":261,"hidden_act":"silu"}
        """

    func problem(_ text: String) -> String? {
        do {
            _ = try LlamaConfig.parse(text, file: "config.json")
            return nil
        } catch {
            return "\(error)"
        }
    }

    @Test func writtenConfigParsesBackToTheSameConfig() throws {
        let parsed = try LlamaConfig.parse(LlamaConfig.demo.configJSON.prettyText, file: "config.json")
        #expect(parsed == LlamaConfig.demo)
    }

    /// The trainer's config.json read by the converter's reader gives the same model,
    /// with the keys the trainer writes stated (so a GGUF conversion records them).
    @Test func theConverterReadsATrainedModelsConfigAsTheSameModel() throws {
        let config = LlamaConfig(hiddenSize: 16, layerCount: 3, headCount: 4, keyValueHeadCount: 2, intermediateSize: 8,
                                 rmsNormEpsilon: 1e-6, ropeTheta: 5000, tieWordEmbeddings: true, maxPositions: 64)
        let read = try LlamaConfig(config: config.configJSON)
        #expect(read.architecture == LlamaFamily.llama)
        #expect([read.hiddenSize, read.layerCount, read.headCount, read.keyValueHeadCount, read.intermediateSize,
                 read.vocabularySize, read.headDimension, read.maxPositions]
                == [16, 3, 4, 2, 8, ByteTokenizer.vocabularySize, 4, 64])
        #expect(read.rmsNormEpsilon == 1e-6 && read.ropeTheta == 5000 && read.tieWordEmbeddings)
        #expect(read.statedKeyValueHeads == 2 && read.statedRopeTheta == 5000 && read.statedMaxPositions == 64)
        #expect(read.bosTokenID == ByteTokenizer.bos && read.eosTokenID == ByteTokenizer.eos)
    }

    @Test func validConfigParses() throws {
        let config = try LlamaConfig.parse(Self.valid, file: "config.json")
        #expect(config.headDimension == 4 && config.keyValueWidth == 8)
    }

    @Test func unknownActivationIsRejected() {
        let text = Self.valid.replacingOccurrences(of: "\"silu\"", with: "\"gelu\"")
        #expect(problem(text) == "config.json: unsupported hidden_act \"gelu\" (only \"silu\")")
    }

    @Test func otherArchitectureIsRejected() {
        let text = Self.valid.replacingOccurrences(of: "LlamaForCausalLM", with: "MistralForCausalLM")
        #expect(problem(text)?.hasPrefix("config.json: unsupported architectures") == true)
    }

    @Test func headsThatDoNotDivideTheWidthAreRejected() {
        let text = Self.valid.replacingOccurrences(of: "\"num_attention_heads\":4", with: "\"num_attention_heads\":3")
        #expect(problem(text) == "config.json: hidden_size 16 is not a multiple of num_attention_heads 3")
    }

    @Test func keyValueHeadsThatDoNotDivideTheHeadsAreRejected() {
        let text = Self.valid.replacingOccurrences(of: "\"num_key_value_heads\":2", with: "\"num_key_value_heads\":3")
        #expect(problem(text) == "config.json: num_attention_heads 4 is not a multiple of num_key_value_heads 3")
    }

    @Test func foreignVocabularyIsRejected() {
        let text = Self.valid.replacingOccurrences(of: "261", with: "32000")
        #expect(problem(text) == "config.json: vocab_size 32000 does not match the byte tokenizer's 261")
    }

    @Test func missingFieldIsNamed() {
        let text = Self.valid.replacingOccurrences(of: "\"intermediate_size\":8,", with: "")
        #expect(problem(text) == "config.json: missing intermediate_size")
    }

    @Test func ropeScalingIsRejected() {
        let text = Self.valid.replacingOccurrences(of: "}", with: ",\"rope_scaling\":{\"type\":\"linear\",\"factor\":2}}")
        #expect(problem(text)?.hasPrefix("config.json: unsupported rope_scaling") == true)
    }
}
