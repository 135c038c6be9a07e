import Checkpoints
import Foundation

// The boundary pass: only for the boundaries a sampled range missed.

extension StatisticsRun {
    /// Streams again the tensors whose exact values the full pass did not
    /// collect (a sampled range missed their boundary, or a scope's), and
    /// counts the patterns of the exact boundary bins. Does nothing when every
    /// range held its boundary.
    func boundaryPass() throws(DeltaStatisticsError) {
        let open = plan.scopeNames.indices.map { scope in
            (0..<deltaCount).map { d in scopeTop[scope][d] != nil && scopeMass[scope][d] == nil }
        }
        let work = plan.tensors.indices.filter { index in
            states[index]!.unresolved || plan.tensors[index].scopes.contains { scope in open[scope].contains(true) }
        }
        guard !work.isEmpty else { return }
        try forEachTensor(work) { (index, scratch) throws(CheckpointError) in
            let tensor = plan.tensors[index]
            var state = states[index]!
            // Fine targets: slot 0 the tensor's top 1 %, slot 1 its support, 2… its scopes.
            var targets: [[FineTarget]] = []
            for d in 0..<deltaCount {
                var bins = state.unresolved ? [state.top[d].bin, state.support[d].bin] : [-1, -1]
                for scope in tensor.scopes { bins.append(open[scope][d] ? scopeTop[scope][d]!.bin : -1) }
                targets.append(bins.enumerated().filter { $0.element >= 0 }.map { slot, bin in
                    FineTarget(bin: bin, counts: scratch.fine[d][slot])
                })
            }
            try stream(tensor, scratch) { count in
                for d in 0..<deltaCount {
                    let delta = UnsafeMutableBufferPointer(start: scratch.deltas[d], count: count)
                    TaskVector.subtract(UnsafeBufferPointer(delta), UnsafeBufferPointer(start: scratch.base, count: count), into: delta)
                    if !targets[d].isEmpty {
                        DeltaKernels.countBoundaryPatterns(scratch.deltas[d], count, targets: targets[d])
                    }
                }
                guard state.unresolved else { return }
                for (p, (a, b)) in pairs.enumerated() {
                    DeltaKernels.classifySupports(scratch.deltas[a], scratch.deltas[b], count,
                                                  boundaryA: state.support[a].bin, boundaryB: state.support[b].bin,
                                                  overlap: scratch.overlaps[p])
                }
            }
            if state.unresolved { resolveFromBoundaryCounts(&state, scratch: scratch) }
            lock.lock()
            for d in 0..<deltaCount {
                for (i, scope) in tensor.scopes.enumerated() where open[scope][d] {
                    let fine = scratch.fine[d][2 + i]
                    var total = scopeFine[scope][d] ?? [Int](repeating: 0, count: MagnitudeBins.fineCount)
                    for f in 0..<MagnitudeBins.fineCount where fine[f] != 0 { total[f] += fine[f] }
                    scopeFine[scope][d] = total
                }
            }
            states[index] = state
            lock.unlock()
            for d in 0..<deltaCount {
                for target in targets[d] {
                    target.counts.update(repeating: 0, count: MagnitudeBins.fineCount)
                }
            }
        }
        for scope in plan.scopeNames.indices {
            for d in 0..<deltaCount where open[scope][d] {
                let top = scopeTop[scope][d]!
                scopeMass[scope][d] = scopeFine[scope][d].map { f in f.withUnsafeBufferPointer { top.resolve($0.baseAddress!).mass } }
                    ?? top.resolve(nil).mass
                scopeFine[scope][d] = nil
            }
        }
    }

    /// A tensor's own top-k figures from the fine counts and overlap classes of the boundary pass.
    private func resolveFromBoundaryCounts(_ state: inout TensorState, scratch: StatisticsScratch) {
        var supportPattern = [Int](), supportSize = [Int]()
        for d in 0..<deltaCount {
            state.statistics.deltas[d].topMass = state.top[d].resolve(scratch.fine[d][0]).mass
            let support = state.support[d].resolve(scratch.fine[d][1])
            supportPattern.append(support.pattern)
            supportSize.append(support.support)
        }
        for (p, (a, b)) in pairs.enumerated() {
            let overlap = scratch.overlaps[p]
            var intersection = overlap.bothClear
            if state.support[b].bin >= 0 {
                for f in supportPattern[b]..<MagnitudeBins.fineCount { intersection += overlap.secondWhenFirstIn[f] }
            }
            if state.support[a].bin >= 0 {
                for f in supportPattern[a]..<MagnitudeBins.fineCount { intersection += overlap.firstWhenSecondIn[f] }
            }
            for (key, count) in overlap.bothOnBoundary
            where Int(key >> 15) >= supportPattern[a] && Int(key & MagnitudeBins.fineMask) >= supportPattern[b] {
                intersection += count
            }
            state.statistics.pairs[p].supportFirst = supportSize[a]
            state.statistics.pairs[p].supportSecond = supportSize[b]
            state.statistics.pairs[p].supportIntersection = intersection
            overlap.reset()
        }
        state.unresolved = false
    }
}

extension DeltaKernels {
    /// Boundary pass: for each non-zero finite entry whose coarse bin is one of
    /// the targets', counts its fine pattern in every target histogram of that bin.
    /// Vectors of eight are screened first; only those holding a hit go lane by lane.
    static func countBoundaryPatterns(_ delta: UnsafePointer<Float>, _ count: Int, targets: [FineTarget]) {
        let limit = Bits(repeating: MagnitudeBins.nonFinite)
        let bins = targets.map { Bits(repeating: UInt32(truncatingIfNeeded: $0.bin)) }
        var i = 0
        while i + 8 <= count {
            let bits = magnitudeBits(load(delta, i))
            let coarse = bits &>> Bits(repeating: MagnitudeBins.shift)
            var hit = Bits()
            for bin in bins { hit |= ones(coarse .== bin) }
            hit &= ones(bits .< limit) & ~ones(bits .== Bits())
            if hit.wrappedSum() != 0 { countPatterns(delta, i..<(i + 8), targets) }
            i += 8
        }
        countPatterns(delta, i..<count, targets)
    }

    private static func countPatterns(_ delta: UnsafePointer<Float>, _ range: Range<Int>, _ targets: [FineTarget]) {
        for i in range {
            let bits = delta[i].bitPattern & 0x7fff_ffff
            guard bits != 0, bits < MagnitudeBins.nonFinite else { continue }
            let bin = Int(bits &>> MagnitudeBins.shift), fine = Int(bits & MagnitudeBins.fineMask)
            for target in targets where target.bin == bin { target.counts[fine] &+= 1 }
        }
    }

    /// Boundary pass, per pair: classifies each position against both deltas'
    /// top-k boundary bins (`boundaryA`/`boundaryB`, −1 when every non-zero entry
    /// is in the support) and counts what the exact thresholds will decide later.
    static func classifySupports(
        _ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ count: Int,
        boundaryA: Int, boundaryB: Int, overlap: PairOverlapScratch
    ) {
        let limit = Bits(repeating: MagnitudeBins.nonFinite), shift = Bits(repeating: MagnitudeBins.shift)
        // Bins are below 2¹⁶, so "above −1" is "at least 0" and bin −1 never matches.
        let clearA = Bits(repeating: UInt32(boundaryA + 1)), clearB = Bits(repeating: UInt32(boundaryB + 1))
        let edgeA = Bits(repeating: UInt32(truncatingIfNeeded: boundaryA))
        let edgeB = Bits(repeating: UInt32(truncatingIfNeeded: boundaryB))
        var bothClear = Bits()
        var i = 0
        while i + 8 <= count {
            let bitsA = magnitudeBits(load(a, i)), bitsB = magnitudeBits(load(b, i))
            let valid = ones(bitsA .< limit) & ones(bitsB .< limit) & ~ones(bitsA .== Bits()) & ~ones(bitsB .== Bits())
            let binA = bitsA &>> shift, binB = bitsB &>> shift
            let inA = ones(binA .>= clearA), inB = ones(binB .>= clearB)
            let onA = ones(binA .== edgeA), onB = ones(binB .== edgeB)
            bothClear &-= valid & inA & inB
            let edge = valid & (onA | onB) & (inA | onA) & (inB | onB)
            if edge.wrappedSum() != 0 {
                classify(a, b, i..<(i + 8), boundaryA: boundaryA, boundaryB: boundaryB, overlap: overlap, countClear: false)
            }
            i += 8
        }
        overlap.bothClear += Int(bothClear.wrappedSum())
        classify(a, b, i..<count, boundaryA: boundaryA, boundaryB: boundaryB, overlap: overlap, countClear: true)
    }

    private static func classify(
        _ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ range: Range<Int>,
        boundaryA: Int, boundaryB: Int, overlap: PairOverlapScratch, countClear: Bool
    ) {
        for i in range {
            let bitsA = a[i].bitPattern & 0x7fff_ffff, bitsB = b[i].bitPattern & 0x7fff_ffff
            guard bitsA != 0, bitsB != 0, bitsA < MagnitudeBins.nonFinite, bitsB < MagnitudeBins.nonFinite else { continue }
            let binA = Int(bitsA &>> MagnitudeBins.shift), binB = Int(bitsB &>> MagnitudeBins.shift)
            let fineA = bitsA & MagnitudeBins.fineMask, fineB = bitsB & MagnitudeBins.fineMask
            if binA > boundaryA {
                if binB > boundaryB {
                    if countClear { overlap.bothClear += 1 }
                } else if binB == boundaryB {
                    overlap.secondWhenFirstIn[Int(fineB)] &+= 1
                    overlap.touched = true
                }
            } else if binA == boundaryA {
                if binB > boundaryB {
                    overlap.firstWhenSecondIn[Int(fineA)] &+= 1
                    overlap.touched = true
                } else if binB == boundaryB {
                    overlap.bothOnBoundary[fineA &<< 15 | fineB, default: 0] += 1
                }
            }
        }
    }
}

/// A fine histogram that collects the patterns of one coarse bin.
struct FineTarget {
    let bin: Int
    let counts: UnsafeMutablePointer<Int>
}

/// Boundary-pass counts for one pair's support overlap within one tensor.
final class PairOverlapScratch {
    /// Positions where both deltas are clearly inside their supports.
    var bothClear = 0
    /// Fine patterns of the first delta on its boundary bin where the second is clearly in, and vice versa.
    let firstWhenSecondIn: UnsafeMutablePointer<Int>
    let secondWhenFirstIn: UnsafeMutablePointer<Int>
    /// Positions where both sit on their boundary bins: (fineA << 15 | fineB) → count.
    var bothOnBoundary: [UInt32: Int] = [:]
    var touched = false

    init() {
        firstWhenSecondIn = .allocate(capacity: MagnitudeBins.fineCount)
        firstWhenSecondIn.initialize(repeating: 0, count: MagnitudeBins.fineCount)
        secondWhenFirstIn = .allocate(capacity: MagnitudeBins.fineCount)
        secondWhenFirstIn.initialize(repeating: 0, count: MagnitudeBins.fineCount)
    }

    deinit {
        firstWhenSecondIn.deallocate()
        secondWhenFirstIn.deallocate()
    }

    func reset() {
        bothClear = 0
        if touched {
            firstWhenSecondIn.update(repeating: 0, count: MagnitudeBins.fineCount)
            secondWhenFirstIn.update(repeating: 0, count: MagnitudeBins.fineCount)
            touched = false
        }
        if !bothOnBoundary.isEmpty { bothOnBoundary.removeAll(keepingCapacity: true) }
    }
}
