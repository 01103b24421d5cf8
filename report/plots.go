package report

import (
	"bytes"
	"fmt"
	"image/color"
	"math"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

// Figure is one plot of a report: its PNG, and how many points it draws.
type Figure struct {
	Name    string // file-name stem: loss, accuracy, sparsity, …
	Title   string
	Caption string
	PNG     []byte
	Points  int
	File    string // where the PNG was written beside the report
}

// series is one line of a plot.
type series struct {
	name   string
	x, y   []float64
	dashed bool
	points bool // draw a glyph at each point
	steps  bool // a step function (bit widths)
	color  color.Color
}

// xy returns s's finite points.
func (s series) xy() plotter.XYs {
	var out plotter.XYs
	for i := range min(len(s.x), len(s.y)) {
		if finite(s.x[i]) && finite(s.y[i]) {
			out = append(out, plotter.XY{X: s.x[i], Y: s.y[i]})
		}
	}
	if s.steps && len(out) > 1 {
		var st plotter.XYs
		for i, p := range out {
			if i > 0 {
				st = append(st, plotter.XY{X: p.X, Y: out[i-1].Y})
			}
			st = append(st, p)
		}
		out = st
	}
	return out
}

func finite(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }

var (
	black = color.RGBA{A: 255}
	gray  = color.RGBA{R: 110, G: 110, B: 110, A: 255}
)

// palette gives n distinguishable colours (hues around the circle).
func palette(i, n int) color.Color {
	if n <= 1 {
		return color.RGBA{R: 31, G: 119, B: 180, A: 255}
	}
	h := float64(i) / float64(n) * 300 // red to magenta, not back to red
	return hsv(h, 0.75, 0.8)
}

func hsv(h, s, v float64) color.Color {
	c := v * s
	x := c * (1 - math.Abs(math.Mod(h/60, 2)-1))
	var r, g, b float64
	switch {
	case h < 60:
		r, g = c, x
	case h < 120:
		r, g = x, c
	case h < 180:
		g, b = c, x
	case h < 240:
		g, b = x, c
	case h < 300:
		r, b = x, c
	default:
		r, b = c, x
	}
	m := v - c
	return color.RGBA{R: uint8(255 * (r + m)), G: uint8(255 * (g + m)), B: uint8(255 * (b + m)), A: 255}
}

// linePlot draws the series on one plot; it returns nil when none has a
// point.
func linePlot(title, xlabel, ylabel string, ss []series) (*plot.Plot, int, error) {
	p := plot.New()
	p.Title.Text, p.X.Label.Text, p.Y.Label.Text = title, xlabel, ylabel
	p.Add(plotter.NewGrid())
	p.Legend.Top = true
	total, named := 0, 0
	for i, s := range ss {
		pts := s.xy()
		if len(pts) == 0 {
			continue
		}
		total += len(pts)
		if s.name != "" {
			named++
		}
		col := s.color
		if col == nil {
			col = palette(i, len(ss))
		}
		if len(pts) == 1 || s.points {
			sc, err := plotter.NewScatter(pts)
			if err != nil {
				return nil, 0, err
			}
			sc.GlyphStyle.Color, sc.GlyphStyle.Shape, sc.GlyphStyle.Radius = col, draw.CircleGlyph{}, vg.Points(2.5)
			p.Add(sc)
			if len(pts) == 1 {
				if s.name != "" {
					p.Legend.Add(s.name, sc)
				}
				continue
			}
		}
		l, err := plotter.NewLine(pts)
		if err != nil {
			return nil, 0, err
		}
		l.LineStyle.Color, l.LineStyle.Width = col, vg.Points(1.5)
		if s.dashed {
			l.LineStyle.Dashes = []vg.Length{vg.Points(5), vg.Points(3)}
		}
		p.Add(l)
		if s.name != "" {
			p.Legend.Add(s.name, l)
		}
	}
	if total == 0 {
		return nil, 0, nil
	}
	headroom(p, named)
	return p, total, nil
}

// headroom raises the top of the y axis so that the legend (top right)
// sits above the curves instead of on them.
func headroom(p *plot.Plot, entries int) {
	if entries == 0 {
		return
	}
	span := p.Y.Max - p.Y.Min
	if span <= 0 {
		span = math.Max(math.Abs(p.Y.Max), 1)
	}
	p.Y.Max += span * 0.085 * float64(entries)
}

// barPlot draws one bar per name.
func barPlot(title, ylabel string, names []string, groups []string, values [][]float64) (*plot.Plot, int, error) {
	p := plot.New()
	p.Title.Text, p.Y.Label.Text = title, ylabel
	p.Add(plotter.NewGrid())
	p.Legend.Top = true
	w := vg.Points(max(2, min(16, 420/float64(max(1, len(names)*len(values))))))
	total := 0
	for g, vs := range values {
		bc, err := plotter.NewBarChart(plotter.Values(vs), w)
		if err != nil {
			return nil, 0, err
		}
		bc.Color, bc.LineStyle.Width = palette(g, len(values)), 0
		bc.Offset = vg.Length(float64(g)-float64(len(values)-1)/2) * w
		p.Add(bc)
		if len(values) > 1 {
			p.Legend.Add(groups[g], bc)
		}
		total += len(vs)
	}
	if total == 0 {
		return nil, 0, nil
	}
	p.NominalX(names...)
	p.X.Tick.Label.Rotation = math.Pi / 3
	p.X.Tick.Label.XAlign, p.X.Tick.Label.YAlign = draw.XRight, draw.YCenter
	return p, total, nil
}

// labelled adds a text label beside each point.
func labelled(p *plot.Plot, pts plotter.XYs, labels []string) error {
	l, err := plotter.NewLabels(plotter.XYLabels{XYs: pts, Labels: labels})
	if err != nil {
		return err
	}
	l.Offset = vg.Point{X: vg.Points(4), Y: vg.Points(2)}
	p.Add(l)
	return nil
}

// png renders a plot.
func png(p *plot.Plot, w, h vg.Length) ([]byte, error) {
	wt, err := p.WriterTo(w, h, "png")
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	if _, err := wt.WriteTo(&b); err != nil {
		return nil, fmt.Errorf("rendering %q: %w", p.Title.Text, err)
	}
	return b.Bytes(), nil
}
