package main

import (
	"fmt"
	"math"
	"os"
	"strings"
)

// A tiny SVG line chart: enough for "how does this grow with the
// number of nodes", with no dependency. x may be on a log scale.

type series struct {
	name string
	xs   []float64
	ys   []float64
}

type chart struct {
	title, xLabel, yLabel string
	logX, logY            bool
	series                []series
}

var palette = []string{"#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"}

func (c chart) write(path string) error {
	const w, h, left, right, top, bottom = 640.0, 360.0, 70.0, 150.0, 40.0, 50.0
	tx := func(v float64) float64 {
		if c.logX {
			return math.Log10(v)
		}
		return v
	}
	ty := func(v float64) float64 {
		if c.logY {
			return math.Log10(math.Max(v, 1e-9))
		}
		return v
	}
	minX, maxX, minY, maxY := math.Inf(1), math.Inf(-1), math.Inf(1), math.Inf(-1)
	for _, s := range c.series {
		for i := range s.xs {
			minX, maxX = math.Min(minX, tx(s.xs[i])), math.Max(maxX, tx(s.xs[i]))
			minY, maxY = math.Min(minY, ty(s.ys[i])), math.Max(maxY, ty(s.ys[i]))
		}
	}
	if math.IsInf(minX, 0) {
		return fmt.Errorf("chart %q: no data", c.title)
	}
	if !c.logY {
		minY = math.Min(minY, 0)
	}
	if maxX == minX {
		maxX = minX + 1
	}
	if maxY == minY {
		maxY = minY + 1
	}
	px := func(v float64) float64 { return left + (tx(v)-minX)/(maxX-minX)*(w-left-right) }
	py := func(v float64) float64 { return h - bottom - (ty(v)-minY)/(maxY-minY)*(h-top-bottom) }
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" font-family="sans-serif" font-size="12">`+"\n", w, h)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(&b, `<text x="%.0f" y="22" font-size="14" font-weight="bold">%s</text>`+"\n", left, esc(c.title))
	// Axes.
	fmt.Fprintf(&b, `<line x1="%.0f" y1="%.0f" x2="%.0f" y2="%.0f" stroke="black"/>`+"\n", left, h-bottom, w-right, h-bottom)
	fmt.Fprintf(&b, `<line x1="%.0f" y1="%.0f" x2="%.0f" y2="%.0f" stroke="black"/>`+"\n", left, top, left, h-bottom)
	fmt.Fprintf(&b, `<text x="%.0f" y="%.0f" text-anchor="middle">%s</text>`+"\n", (left+w-right)/2, h-12, esc(c.xLabel))
	fmt.Fprintf(&b, `<text x="16" y="%.0f" transform="rotate(-90 16 %.0f)" text-anchor="middle">%s</text>`+"\n", (top+h-bottom)/2, (top+h-bottom)/2, esc(c.yLabel))
	// Ticks: the x values of the first series; five y ticks.
	if len(c.series) > 0 {
		for _, x := range c.series[0].xs {
			fmt.Fprintf(&b, `<text x="%.1f" y="%.0f" text-anchor="middle">%s</text>`+"\n", px(x), h-bottom+16, num(x))
		}
	}
	for i := 0; i <= 4; i++ {
		v := minY + (maxY-minY)*float64(i)/4
		if c.logY {
			v = math.Pow(10, v)
		}
		y := py(v)
		fmt.Fprintf(&b, `<line x1="%.0f" y1="%.1f" x2="%.0f" y2="%.1f" stroke="#ddd"/>`+"\n", left, y, w-right, y)
		fmt.Fprintf(&b, `<text x="%.0f" y="%.1f" text-anchor="end">%s</text>`+"\n", left-4, y+4, num(v))
	}
	for i, s := range c.series {
		col := palette[i%len(palette)]
		var pts []string
		for k := range s.xs {
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", px(s.xs[k]), py(s.ys[k])))
			fmt.Fprintf(&b, `<circle cx="%.1f" cy="%.1f" r="3" fill="%s"/>`+"\n", px(s.xs[k]), py(s.ys[k]), col)
		}
		fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>`+"\n", col, strings.Join(pts, " "))
		fmt.Fprintf(&b, `<rect x="%.0f" y="%.0f" width="12" height="12" fill="%s"/><text x="%.0f" y="%.0f">%s</text>`+"\n",
			w-right+10, top+float64(i)*18, col, w-right+26, top+float64(i)*18+10, esc(s.name))
	}
	b.WriteString("</svg>\n")
	return os.WriteFile(path, []byte(b.String()), 0o644)
}

func num(v float64) string {
	switch {
	case v == 0:
		return "0"
	case math.Abs(v) >= 100:
		return fmt.Sprintf("%.0f", v)
	case math.Abs(v) >= 1:
		return strings.TrimSuffix(strings.TrimRight(fmt.Sprintf("%.1f", v), "0"), ".")
	}
	return fmt.Sprintf("%.2g", v)
}

func esc(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace(s)
}
