package infer

import (
	"errors"
	"math"
	"math/rand/v2"
)

// Sample continues prompt by n bytes from a language model (a network
// scoring the next byte at every position of its window, graph's
// PerPosition): each byte is drawn from the softmax of the scores at the
// last position of the text so far — its last window's bytes, a shorter
// text padded after it (the attention is causal: what follows a position
// does not change its scores) — divided by temperature (0: the most
// likely byte). The bytes are a pure function of the model, the prompt,
// temperature and seed.
func (m *Model) Sample(prompt []byte, n int, temperature float64, seed uint64) ([]byte, error) {
	if !m.Net.PerPosition || !m.embeds() {
		return nil, errors.New("infer: sampling needs a language model (a transformer scoring the next byte at every position); this model classifies")
	}
	if temperature < 0 || math.IsNaN(temperature) {
		return nil, errors.New("infer: sampling needs a temperature ≥ 0")
	}
	if len(prompt) == 0 {
		prompt = []byte{'\n'}
	}
	t, v := m.Cols, m.Classes
	r := rand.New(rand.NewPCG(seed, 0x53414d504c45)) // "SAMPLE"
	text := append([]byte(nil), prompt...)
	x := make([]float32, t)
	p := make([]float64, v)
	for range n {
		win := text[max(0, len(text)-t):]
		clear(x)
		for i, b := range win {
			x[i] = float32(b) * (1.0 / 255)
		}
		logits, err := m.Forward(x, 1)
		if err != nil {
			return nil, err
		}
		row := logits[(len(win)-1)*v : len(win)*v]
		next := 0
		for j, s := range row {
			if s > row[next] {
				next = j
			}
		}
		if temperature > 0 {
			var z float64
			for j, s := range row {
				p[j] = math.Exp(float64(s-row[next]) / temperature)
				z += p[j]
			}
			u := r.Float64() * z
			for j := range p {
				if u -= p[j]; u < 0 || j == v-1 {
					next = j
					break
				}
			}
		}
		text = append(text, byte(next))
	}
	return text[len(prompt):], nil
}
