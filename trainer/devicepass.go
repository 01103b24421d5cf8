package trainer

import (
	"github.com/lathe-ml/lathe/compute"
	"github.com/lathe-ml/lathe/graph"
)

// input is what layer i reads as its k-th input.
func (m *DeviceNet) input(x compute.Buffer, i, k int) compute.Buffer {
	if j := m.layers[i].from[k]; j >= 0 {
		return m.output(j)
	}
	return x
}

// forward runs rows samples of x through the network; the logits are in
// the last layer's act. With train, batch norms normalize by the batch's
// statistics (and move their running ones, unless m.probe), and dropout
// masks for step are drawn and applied (x itself is masked in place).
func (m *DeviceNet) forward(x compute.Buffer, rows int, train bool, step int64) compute.Buffer {
	dev := m.dev
	if train && m.dropIn > 0 && x == m.x {
		n := rows * m.in
		dev.DropoutMask(m.inMask, n, m.dropIn, 1/(1-m.dropIn), m.dropSeedFor(step, -1))
		dev.Mul(x, m.inMask, n)
	}
	for i := range m.layers {
		L := &m.layers[i]
		in, relu := m.input(x, i, 0), L.Act == graph.ReLU
		switch L.Kind {
		case graph.Linear:
			dev.Gemm(false, true, rows, L.Out, L.In.Size(), 1, in, m.weights(L.w), 0, L.act)
			dev.BiasAct(L.act, m.params[L.b].w, rows, L.Out, relu)
		case graph.Conv:
			k, s, p := L.Window()
			pix, col := rows*L.n/L.Out, in
			switch {
			case depthwise(L.Layer):
				dev.DepthwiseConv(L.act, in, m.weights(L.w), rows, L.In.H, L.In.W, L.In.C, k, s, p)
			case L.col != nil:
				dev.Im2col(L.col, in, rows, L.In.H, L.In.W, L.In.C, k, s, p)
				col = L.col
				fallthrough
			default:
				dev.Gemm(false, true, pix, L.Out, k*k*L.In.C, 1, col, m.weights(L.w), 0, L.act)
			}
			if w := &m.params[L.w]; w.wf != nil {
				dev.DivCols(L.act, L.act, w.s, pix, L.Out) // back to the convolution's own scale
			}
			if L.b >= 0 {
				dev.BiasAct(L.act, m.params[L.b].w, pix, L.Out, relu)
			} else if relu {
				dev.BiasAct(L.act, m.zeros, pix, L.Out, true)
			}
		case graph.MaxPool:
			k, s, p := L.Window()
			dev.MaxPool(L.act, L.arg, in, rows, L.In.H, L.In.W, L.In.C, k, s, p)
		case graph.AvgPool:
			k, s, p := L.Window()
			dev.AvgPool(L.act, in, rows, L.In.H, L.In.W, L.In.C, k, s, p)
		case graph.BatchNorm:
			pos, c := rows*L.In.H*L.In.W, L.In.C
			mean := L.mean
			switch {
			case train && !m.bnFrozen:
				rmean, rvar := L.rmean, L.rvar
				if m.probe {
					rmean, rvar = nil, nil
				}
				dev.BNStats(L.mean, L.inv, rmean, rvar, in, pos, c, graph.BNMomentum, graph.BNEpsilon)
			case train: // frozen: the running statistics, constants of the pass
				dev.Copy(L.mean, L.rmean, c)
				dev.BNScale(L.inv, nil, L.rvar, c, graph.BNEpsilon)
			default:
				dev.BNScale(L.inv, nil, L.rvar, c, graph.BNEpsilon)
				mean = L.rmean
			}
			dev.BNForward(L.act, in, mean, L.inv, m.params[L.w].w, m.params[L.b].w, pos, c, relu)
		case graph.Add:
			n := rows * L.n
			for k := 1; k < len(L.from); k++ {
				a := L.act
				if k == 1 {
					a = in
				}
				dev.AddAct(L.act, a, m.input(x, i, k), n, relu && k == len(L.from)-1)
			}
		case graph.GlobalAvgPool:
			dev.GlobalAvgPool(L.act, in, rows, L.In.H*L.In.W, L.In.C)
		case graph.Flatten:
			dev.Copy(L.act, in, rows*L.n)
		}
		if L.Act == graph.ReLU6 {
			dev.ReLU6(L.act, rows*L.n)
		}
		if L.aq != nil && L.aq.Enabled {
			observe := train && !L.aq.Frozen && !m.probe
			dev.ActQuant(L.q, L.inside, L.obs, L.act, rows*L.n, L.aq.Spec.Bits, L.aq.Momentum, observe)
		}
		if train && L.hidMask != nil {
			n, rate := rows*L.n, float32(L.Dropout)
			dev.DropoutMask(L.hidMask, n, rate, 1/(1-rate), m.dropSeedFor(step, i))
			dev.Mul(m.output(i), L.hidMask, n)
		}
	}
	return m.layers[len(m.layers)-1].act
}

// gradients runs the forward and backward passes on the batch in m.x /
// m.labels, leaving each parameter's gradient in its g.
func (m *DeviceNet) gradients(s DeviceStep) {
	dev, rows, last := m.dev, m.batch, len(m.layers)-1
	m.quantize()
	logits := m.forward(m.x, rows, true, s.Step)
	dev.SoftmaxKD(m.layers[last].grad, m.stats, logits, m.labels, s.Teacher, rows, m.classes(), s.T, s.Alpha, 1/float32(rows))
	// A layer read by several gets the first gradient written into its
	// grad, the others through spare, added in layer order from the last.
	written := make([]bool, len(m.layers))
	written[last] = true
	into := func(j int) (compute.Buffer, func()) {
		if j < 0 {
			return nil, func() {}
		}
		if !written[j] {
			written[j] = true
			return m.layers[j].grad, func() {}
		}
		n := rows * m.layers[j].n
		return m.spare, func() { dev.AddAct(m.layers[j].grad, m.layers[j].grad, m.spare, n, false) }
	}
	for i := last; i >= 0; i-- {
		L := &m.layers[i]
		if !written[i] {
			continue // read by no later layer
		}
		g, n := L.grad, rows*L.n
		if L.hidMask != nil {
			dev.Mul(g, L.hidMask, n)
		}
		if L.aq != nil && L.aq.Enabled {
			dev.Mul(g, L.inside, n) // straight through where the value was in range
		}
		switch L.Act {
		case graph.ReLU:
			dev.ReLUGrad(g, g, L.act, n)
		case graph.ReLU6:
			dev.ReLU6Grad(g, g, L.act, n)
		}
		in := m.input(m.x, i, 0)
		switch L.Kind {
		case graph.Linear:
			w, b := &m.params[L.w], &m.params[L.b]
			dev.Gemm(true, false, L.Out, L.In.Size(), rows, 1, g, in, 0, w.g)
			dev.ColSum(b.g, g, rows, L.Out)
			if dx, done := into(L.from[0]); dx != nil {
				dev.Gemm(false, false, rows, L.In.Size(), L.Out, 1, g, m.weights(L.w), 0, dx)
				done()
			}
		case graph.Conv:
			k, st, p := L.Window()
			pix, cols, col := rows*L.n/L.Out, k*k*L.In.C, in
			if L.col != nil {
				col = L.col
			}
			w := &m.params[L.w]
			if L.b >= 0 {
				dev.ColSum(m.params[L.b].g, g, pix, L.Out)
			}
			if w.wf != nil {
				dev.DivCols(g, g, w.s, pix, L.Out) // the folded weight's output gradient
			}
			if depthwise(L.Layer) {
				cols = k * k
				dev.DepthwiseConvGradW(w.g, g, in, rows, L.In.H, L.In.W, L.In.C, k, st, p)
			} else {
				dev.Gemm(true, false, L.Out, cols, pix, 1, g, col, 0, w.g)
			}
			if w.wf != nil {
				dev.ScaleRows(w.g, w.g, w.s, L.Out, cols) // W·s's gradient to W's (none to γ through s)
			}
			if dx, done := into(L.from[0]); dx != nil {
				switch {
				case depthwise(L.Layer):
					dev.DepthwiseConvGradX(dx, g, m.weights(L.w), rows, L.In.H, L.In.W, L.In.C, k, st, p)
				case L.col == nil:
					dev.Gemm(false, false, pix, cols, L.Out, 1, g, m.weights(L.w), 0, dx)
				default:
					dev.Gemm(false, false, pix, cols, L.Out, 1, g, m.weights(L.w), 0, m.dcol)
					dev.Col2im(dx, m.dcol, rows, L.In.H, L.In.W, L.In.C, k, st, p)
				}
				done()
			}
		case graph.MaxPool, graph.AvgPool:
			if dx, done := into(L.from[0]); dx != nil {
				k, st, p := L.Window()
				if L.Kind == graph.MaxPool {
					dev.MaxPoolGrad(dx, g, L.arg, rows, L.In.H, L.In.W, L.In.C, k, st, p)
				} else {
					dev.AvgPoolGrad(dx, g, rows, L.In.H, L.In.W, L.In.C, k, st, p)
				}
				done()
			}
		case graph.BatchNorm:
			// The input's gradient is needed for the scale's and shift's
			// too: it goes to spare first when the input is the network's.
			dx, done := into(L.from[0])
			if dx == nil {
				dx = m.spare
			}
			dev.BNGrad(dx, m.params[L.w].g, m.params[L.b].g, g, in, L.mean, L.inv, m.params[L.w].w, rows*L.In.H*L.In.W, L.In.C, m.bnFrozen)
			done()
		case graph.Add:
			for k := range L.from {
				if dx, done := into(L.from[k]); dx != nil {
					dev.Copy(dx, g, n)
					done()
				}
			}
		case graph.GlobalAvgPool:
			if dx, done := into(L.from[0]); dx != nil {
				dev.GlobalAvgPoolGrad(dx, g, rows, L.In.H*L.In.W, L.In.C)
				done()
			}
		case graph.Flatten:
			if dx, done := into(L.from[0]); dx != nil {
				dev.Copy(dx, g, n)
				done()
			}
		}
	}
}
