extension LlamaModel {
    /// Log-probabilities of `batch`'s counted targets (a forward pass).
    func targetLogProbs(_ batch: TokenBatch) -> TargetLogProbs {
        let a = forward(batch)
        return LogitLoss.targetLogProbs(logits: a.logits.elements, batch: batch, vocabulary: config.vocabularySize)
    }

    /// The loss of `objective` on `batch`, without a gradient.
    func loss(_ batch: TokenBatch, objective: Objective, referenceLogProbs: [Double] = []) -> Double {
        objective.evaluate(targetLogProbs(batch), batch: batch, referenceLogProbs: referenceLogProbs).loss
    }

    /// The loss of `objective` on `batch`; its gradient is added into `gradient`.
    func lossAndGradient(_ batch: TokenBatch, objective: Objective, referenceLogProbs: [Double] = [],
                         into gradient: FloatBuffer) -> Double {
        let a = forward(batch)
        let logProbs = LogitLoss.targetLogProbs(logits: a.logits.elements, batch: batch, vocabulary: config.vocabularySize)
        let (loss, rowGradient) = objective.evaluate(logProbs, batch: batch, referenceLogProbs: referenceLogProbs)
        LogitLoss.logitGradient(softmax: a.logits.elements, batch: batch, vocabulary: config.vocabularySize, rowGradient: rowGradient)
        backward(logitGradient: a.logits.elements, into: gradient)
        return loss
    }
}
