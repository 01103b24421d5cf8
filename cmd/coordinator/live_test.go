package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"image"
	_ "image/png"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/lathe-ml/lathe/report"
	"github.com/lathe-ml/lathe/rundir"
)

// browser starts headless Chromium (Debian's chromium, which make deps
// installs); a test that needs one fails without it.
func browser(t *testing.T) (context.Context, context.CancelFunc) {
	t.Helper()
	path, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatal("headless Chromium is needed: apt-get install chromium (make deps installs it)")
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(path), chromedp.NoSandbox,
		chromedp.WindowSize(1100, 1000), chromedp.Flag("disable-dev-shm-usage", true))
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	return ctx, func() { cancel(); cancelAlloc() }
}

func statusStep(t *testing.T, dir string) int64 {
	t.Helper()
	var st rundir.Status
	b, err := os.ReadFile(filepath.Join(dir, rundir.StatusFile))
	if err != nil || json.Unmarshal(b, &st) != nil {
		t.Fatalf("status.json: %v", err)
	}
	return st.Step
}

// scrape reads /metrics with Prometheus's own text parser.
func scrape(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("/metrics does not parse: %v", err)
	}
	for name := range fams {
		if !strings.HasPrefix(name, "lathe_") {
			t.Fatalf("metric %s does not start with lathe_", name)
		}
	}
	return fams
}

// counters are every counter's value by name and labels.
func counters(fams map[string]*dto.MetricFamily) map[string]float64 {
	out := map[string]float64{}
	for name, f := range fams {
		if f.GetType() != dto.MetricType_COUNTER {
			continue
		}
		for _, m := range f.Metric {
			key := name
			for _, l := range m.Label {
				key += "," + l.GetName() + "=" + l.GetValue()
			}
			out[key] = m.GetCounter().GetValue()
		}
	}
	return out
}

// TestLivePageInABrowser runs a cluster job with --http as a person would
// watch it: the page opened in headless Chromium, its step counter seen
// to move and to match status.json within one refresh, a screenshot
// taken, /metrics parsed and its counters seen only to grow; then the
// job is stopped and its report opened in the browser, every plot drawn.
func TestLivePageInABrowser(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a cluster job and a browser")
	}
	dir := t.TempDir()
	recipe := filepath.Join(dir, "live.hcl")
	os.WriteFile(recipe, []byte(`job "live" {
  epochs     = 200
  batch      = 50
  validation = 55000
  model {
    arch   = "mlp"
    hidden = [64]
  }
  prune "magnitude" {
    layers   = ["fc1"]
    target   = 0.5
    to_epoch = 2
  }
}
`), 0o644)
	runDir := filepath.Join(dir, "run")
	cmd := exec.Command(os.Args[0], "--recipe", recipe, "--run-dir", runDir, "--workers", "1", "--http", "127.0.0.1:0", "--no-progress")
	cmd.Env = append(os.Environ(), "LATHE_TEST_COORDINATOR=1")
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	urls := make(chan string, 1)
	var logs bytes.Buffer
	go func() {
		sc := bufio.NewScanner(stderr)
		re := regexp.MustCompile(`live page: url=(\S+)`)
		for sc.Scan() {
			logs.WriteString(sc.Text() + "\n")
			if m := re.FindStringSubmatch(sc.Text()); m != nil {
				urls <- m[1]
			}
		}
	}()
	var url string
	select {
	case url = <-urls:
	case <-time.After(60 * time.Second):
		t.Fatalf("no live page announced:\n%s", logs.String())
	}

	ctx, cancel := browser(t)
	defer cancel()
	text := func(sel string) string {
		s, err := chromedp.Run(ctx, chromedp.Text(sel))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	number := func(sel string) int64 {
		n, err := strconv.ParseInt(text(sel), 10, 64)
		if err != nil {
			return -1
		}
		return n
	}
	if _, err := chromedp.Run(ctx, chromedp.Navigate(url)); err != nil {
		t.Fatal(err)
	}
	// The step counter moves.
	first := int64(-1)
	deadline := time.Now().Add(60 * time.Second)
	for {
		if n := number("#step"); n > 0 && first < 0 {
			first = n
		} else if first > 0 && n > first {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the page's step counter did not move from %d (state %q, error %q)", first, text("#state"), text("#error"))
		}
		time.Sleep(300 * time.Millisecond)
	}
	// It matches status.json within one refresh (the page polls every second).
	before := statusStep(t, runDir)
	time.Sleep(1300 * time.Millisecond)
	shown := number("#step")
	after := statusStep(t, runDir)
	if shown < before || shown > after {
		t.Fatalf("page shows step %d; status.json said %d before it and %d after", shown, before, after)
	}
	if got := text("#phase"); got != "student" {
		t.Fatalf("phase %q", got)
	}
	// The cluster's worker, and the curves so far.
	workers, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll("#workers tbody tr").length`))
	if err != nil {
		t.Fatal(err)
	}
	points, err := chromedp.Run(ctx, chromedp.Evaluate[int](`Math.max(...Array.from(document.querySelectorAll("#lossChart polyline")).map(p => +p.dataset.points))`))
	if err != nil || workers != 1 || points < 1 {
		t.Fatalf("workers table %d rows, loss chart %d points (%v)", workers, points, err)
	}
	shot, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	keepScreenshot(t, "live.png", shot)

	// /metrics: Prometheus's parser reads it; counters only grow.
	m1 := scrape(t, url+"metrics")
	time.Sleep(1500 * time.Millisecond)
	m2 := scrape(t, url+"metrics")
	c1, c2 := counters(m1), counters(m2)
	for k, v := range c1 {
		if c2[k] < v {
			t.Fatalf("counter %s went down: %v → %v", k, v, c2[k])
		}
	}
	for _, k := range []string{"lathe_steps_total", "lathe_samples_total", "lathe_bytes_exchanged_total,direction=sent"} {
		if !(c2[k] > c1[k]) {
			t.Fatalf("counter %s did not grow while training: %v → %v", k, c1[k], c2[k])
		}
	}
	if f := m2["lathe_workers"]; f == nil {
		t.Fatal("no lathe_workers")
	}
	if g := m2["lathe_step"].GetMetric()[0].GetGauge().GetValue(); g < float64(after) {
		t.Fatalf("lathe_step %v behind status.json's %d", g, after)
	}

	// Stop the job (it checkpoints and exits), then open its report.
	cmd.Process.Signal(syscall.SIGTERM)
	cmd.Wait()
	rep, err := report.Write(runDir, report.Options{Runtime: false})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := chromedp.Run(ctx, chromedp.Navigate("file://"+rep.Out)); err != nil {
		t.Fatal(err)
	}
	type img struct {
		Alt   string `json:"alt"`
		Width int    `json:"width"`
	}
	imgs, err := chromedp.Run(ctx, chromedp.Evaluate[[]img](`Array.from(document.images).map(i => ({alt: i.alt, width: i.naturalWidth}))`))
	if err != nil {
		t.Fatal(err)
	}
	if len(imgs) != len(rep.Figures) || len(imgs) < 4 {
		t.Fatalf("the report shows %d images of %d figures", len(imgs), len(rep.Figures))
	}
	for _, im := range imgs {
		if im.Width < 300 {
			t.Fatalf("plot %q is %d pixels wide in the browser", im.Alt, im.Width)
		}
	}
	if shot, err = chromedp.Run(ctx, chromedp.FullScreenshot(100)); err != nil {
		t.Fatal(err)
	}
	keepScreenshot(t, "report.png", shot)
}

// keepScreenshot checks a screenshot is an image with something on it and
// keeps it in $LATHE_SCREENSHOTS when set.
func keepScreenshot(t *testing.T, name string, b []byte) {
	t.Helper()
	img, _, err := image.Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	if img.Bounds().Dx() < 800 {
		t.Fatalf("%s: %v", name, img.Bounds())
	}
	if d := os.Getenv("LATHE_SCREENSHOTS"); d != "" {
		os.MkdirAll(d, 0o755)
		if err := os.WriteFile(filepath.Join(d, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
