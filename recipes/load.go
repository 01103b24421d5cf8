package recipes

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"unicode/utf8"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclparse"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/hashicorp/hcl/v2/hclwrite"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/convert"
	"github.com/zclconf/go-cty/cty/function"
	"github.com/zclconf/go-cty/cty/function/stdlib"
	"github.com/zclconf/go-cty/cty/gocty"

	"github.com/lathe-ml/lathe/data"
)

// functions are what recipe expressions may call: floor(var.epochs / 3).
var functions = map[string]function.Function{
	"floor": stdlib.FloorFunc,
	"ceil":  stdlib.CeilFunc,
	"min":   stdlib.MinFunc,
	"max":   stdlib.MaxFunc,
	"abs":   stdlib.AbsoluteFunc,
}

// Error carries a recipe's diagnostics; its message lists each with its
// position ("recipe.hcl:12,3: ...").
type Error struct {
	Diags hcl.Diagnostics
}

func (e *Error) Error() string {
	var lines []string
	for _, d := range e.Diags {
		if d.Severity != hcl.DiagError {
			continue
		}
		msg := d.Summary
		if d.Detail != "" {
			msg += "; " + d.Detail
		}
		if d.Subject != nil && d.Subject.Start.Line == 0 {
			msg = fmt.Sprintf("%s: %s", d.Subject.Filename, msg) // a -var: no position
		} else if d.Subject != nil {
			msg = fmt.Sprintf("%s:%d,%d: %s", d.Subject.Filename, d.Subject.Start.Line, d.Subject.Start.Column, msg)
		}
		if len(lines) == maxErrors {
			lines = append(lines, "… and more errors (the first are above)")
			break
		}
		lines = append(lines, msg)
	}
	return "recipe: " + strings.Join(lines, "\n  ")
}

// maxErrors bounds the diagnostics an Error prints.
const maxErrors = 20

// MaxBytes bounds a recipe's size: a recipe is a page of text, and a
// larger file is almost surely not one.
const MaxBytes = 1 << 20

// Load reads and validates a recipe file. vars holds -var overrides as
// name=value strings.
func Load(path string, vars []string) (*Job, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("recipe: %w", err)
	}
	defer f.Close()
	src, err := io.ReadAll(io.LimitReader(f, MaxBytes+1))
	if err != nil {
		return nil, fmt.Errorf("recipe: %w", err)
	}
	return Parse(src, path, vars)
}

// Parse decodes a recipe held in memory; filename is used in diagnostics.
func Parse(src []byte, filename string, vars []string) (*Job, error) {
	if len(src) > MaxBytes {
		return nil, fmt.Errorf("recipe: %s is larger than %d bytes, the limit for a recipe", filename, MaxBytes)
	}
	if i := bytes.IndexByte(src, 0); i >= 0 || !utf8.Valid(src) {
		return nil, fmt.Errorf("recipe: %s is not a text file (a NUL byte or invalid UTF-8)", filename)
	}
	file, diags := hclparse.NewParser().ParseHCL(src, filename)
	if diags.HasErrors() {
		return nil, &Error{diags}
	}
	content, diags := file.Body.Content(&hcl.BodySchema{Blocks: []hcl.BlockHeaderSchema{
		{Type: "variable", LabelNames: []string{"name"}},
		{Type: "job", LabelNames: []string{"name"}},
	}})
	if diags.HasErrors() {
		return nil, &Error{diags}
	}
	d := &decoder{ranges: map[string]hcl.Range{}, filename: filename}
	values, resolved := d.variables(content.Blocks, vars, filename)
	if d.diags.HasErrors() {
		return nil, &Error{d.diags}
	}
	d.ctx = &hcl.EvalContext{Variables: map[string]cty.Value{"var": cty.ObjectVal(values)}, Functions: functions}
	var jobs []*hcl.Block
	for _, b := range content.Blocks {
		if b.Type == "job" {
			jobs = append(jobs, b)
		}
	}
	if len(jobs) != 1 {
		r := hcl.Range{Filename: filename, Start: hcl.InitialPos, End: hcl.InitialPos}
		if len(jobs) > 1 {
			r = jobs[1].DefRange
		}
		return nil, &Error{hcl.Diagnostics{{Severity: hcl.DiagError, Summary: fmt.Sprintf("a recipe holds exactly one job block, found %d", len(jobs)), Subject: &r}}}
	}
	job := Defaults()
	job.File, job.Variables, job.Ranges = filename, resolved, d.ranges
	d.job(jobs[0], &job)
	if d.diags.HasErrors() {
		return nil, &Error{d.diags}
	}
	return &job, nil
}

type decoder struct {
	ctx      *hcl.EvalContext
	diags    hcl.Diagnostics
	ranges   map[string]hcl.Range
	filename string
}

func (d *decoder) errorf(r hcl.Range, summary, detail string, args ...any) {
	d.diags = append(d.diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: summary, Detail: fmt.Sprintf(detail, args...), Subject: r.Ptr()})
}

// variables evaluates the variable blocks and applies -var overrides.
func (d *decoder) variables(blocks hcl.Blocks, overrides []string, filename string) (map[string]cty.Value, map[string]string) {
	values := map[string]cty.Value{}
	for _, b := range blocks {
		if b.Type != "variable" {
			continue
		}
		name := b.Labels[0]
		if _, dup := values[name]; dup {
			d.errorf(b.DefRange, "duplicate variable", "variable %q is declared twice", name)
			continue
		}
		c, diags := b.Body.Content(&hcl.BodySchema{Attributes: []hcl.AttributeSchema{{Name: "default", Required: true}, {Name: "description"}}})
		d.diags = append(d.diags, diags...)
		if diags.HasErrors() {
			continue
		}
		expr := c.Attributes["default"].Expr
		if refs := expr.Variables(); len(refs) > 0 {
			d.errorf(expr.Range(), "invalid default", "variable %q: a default is a value and cannot refer to %s (variables are set with -var)", name, traversalText(refs[0]))
			values[name] = cty.DynamicVal
			continue
		}
		v, diags := expr.Value(nil)
		d.diags = append(d.diags, diags...)
		if !diags.HasErrors() {
			if err := usable(v); err != nil {
				d.errorf(expr.Range(), "invalid default", "variable %q: the default %s", name, err)
			}
		}
		values[name] = v
	}
	for _, kv := range overrides {
		name, raw, ok := strings.Cut(kv, "=")
		r := hcl.Range{Filename: "-var " + kv}
		if !ok {
			d.errorf(r, "invalid -var", "want -var name=value, got %q", kv)
			continue
		}
		old, declared := values[name]
		if !declared {
			var known []string
			for k := range values {
				known = append(known, k)
			}
			sort.Strings(known)
			d.errorf(r, "undeclared variable", "%s declares no variable %q (declared: %s)", filename, name, strings.Join(known, ", "))
			continue
		}
		v := cty.StringVal(raw)
		if !old.Type().Equals(cty.String) {
			// Non-string variables take an HCL expression: 12, 0.5, true, [300, 100].
			expr, diags := hclsyntax.ParseExpression([]byte(raw), r.Filename, hcl.InitialPos)
			if diags.HasErrors() {
				d.errorf(r, "invalid -var value", "%q is not a valid value for %s", raw, name)
				continue
			}
			if v, diags = expr.Value(nil); diags.HasErrors() {
				d.errorf(r, "invalid -var value", "%s takes a %s like its default; %q is not one (only numbers, true/false, lists and quoted strings, no names)",
					name, old.Type().FriendlyName(), raw)
				continue
			}
			if err := usable(v); err != nil {
				d.errorf(r, "invalid -var value", "%s: %q %s", name, raw, err)
				continue
			}
		}
		if cv, err := convert.Convert(v, old.Type()); err == nil {
			v = cv
		} else {
			d.errorf(r, "invalid -var value", "%s: %q is not a %s (the type of its default)", name, raw, old.Type().FriendlyName())
			continue
		}
		values[name] = v
	}
	resolved := map[string]string{}
	for k, v := range values {
		if usable(v) == nil { // the others are errors already
			resolved[k] = string(hclwrite.TokensForValue(v).Bytes())
		}
	}
	return values, resolved
}

// traversalText is a reference as written: var.name.
func traversalText(t hcl.Traversal) string {
	out := t.RootName()
	for _, step := range t[1:] {
		if a, ok := step.(hcl.TraverseAttr); ok {
			out += "." + a.Name
		}
	}
	return out
}

// usable says why a variable's value cannot be used: it is not known (a
// division by zero, a reference), or holds a number outside float64.
func usable(v cty.Value) error {
	if !v.IsWhollyKnown() {
		return errors.New("cannot be evaluated to a value (a division by zero, or a reference to another variable?)")
	}
	var bad error
	_ = cty.Walk(v, func(_ cty.Path, x cty.Value) (bool, error) {
		if x.IsNull() || !x.Type().Equals(cty.Number) {
			return true, nil
		}
		f, _ := x.AsBigFloat().Float64()
		if math.IsInf(f, 0) {
			bad = fmt.Errorf("is %s, outside the range of a 64-bit number", x.AsBigFloat().Text('g', 6))
		}
		return true, nil
	})
	return bad
}

// attrs decodes one block's attributes into typed fields, recording ranges.
type attrs struct {
	d      *decoder
	prefix string
	m      hcl.Attributes
}

func (a attrs) value(name string, ty cty.Type) (cty.Value, *hcl.Attribute, bool) {
	at, ok := a.m[name]
	if !ok {
		return cty.NilVal, nil, false
	}
	a.d.ranges[a.prefix+name] = at.Expr.Range()
	v, diags := at.Expr.Value(a.d.ctx)
	if diags.HasErrors() {
		a.d.diags = append(a.d.diags, diags...)
		return cty.NilVal, at, false
	}
	cv, err := convert.Convert(v, ty)
	if err != nil || cv.IsNull() || !cv.IsKnown() {
		a.d.errorf(at.Expr.Range(), "incorrect attribute value type", "%s must be %s, got %s", a.prefix+name, ty.FriendlyName(), v.Type().FriendlyName())
		return cty.NilVal, at, false
	}
	return cv, at, true
}

func (a attrs) float(name string, dst *float64, lo, hi float64, loOpen bool) {
	v, at, ok := a.value(name, cty.Number)
	if !ok {
		return
	}
	var f float64
	if err := gocty.FromCtyValue(v, &f); err != nil {
		a.d.errorf(at.Expr.Range(), "invalid number", "%s = %s is outside the range of a 64-bit number", a.prefix+name, v.AsBigFloat().Text('g', 6))
		return
	}
	if math.IsNaN(f) || f < lo || f > hi || (loOpen && f == lo) {
		left := "["
		if loOpen {
			left = "("
		}
		a.d.errorf(at.Expr.Range(), "value out of range", "%s = %v is outside %s%v, %v]", a.prefix+name, f, left, lo, hi)
		return
	}
	*dst = f
}

func (a attrs) int(name string, dst *int, lo, hi int) {
	v, at, ok := a.value(name, cty.Number)
	if !ok {
		return
	}
	var n int
	if err := gocty.FromCtyValue(v, &n); err != nil {
		a.d.errorf(at.Expr.Range(), "invalid integer", "%s must be a whole number that fits 64 bits, got %s", a.prefix+name, v.AsBigFloat().Text('g', 10))
		return
	}
	if n < lo || n > hi {
		a.d.errorf(at.Expr.Range(), "value out of range", "%s = %d is outside [%d, %d]", a.prefix+name, n, lo, hi)
		return
	}
	*dst = n
}

func (a attrs) bool(name string, dst *bool) {
	if v, _, ok := a.value(name, cty.Bool); ok {
		*dst = v.True()
	}
}

// str decodes a string whose allowed values another package knows (the
// plan checks it, pointing here).
func (a attrs) str(name string, dst *string) {
	if v, _, ok := a.value(name, cty.String); ok {
		*dst = v.AsString()
	}
}

func (a attrs) choice(name string, dst *string, allowed []string) {
	v, at, ok := a.value(name, cty.String)
	if !ok {
		return
	}
	s := v.AsString()
	if !slices.Contains(allowed, s) {
		a.d.errorf(at.Expr.Range(), "unknown value", "%s = %q; allowed: %s", a.prefix+name, s, strings.Join(allowed, ", "))
		return
	}
	*dst = s
}

func (a attrs) ints(name string, dst *[]int, lo, hi int) {
	v, at, ok := a.value(name, cty.List(cty.Number))
	if !ok {
		return
	}
	var out []int
	if err := gocty.FromCtyValue(v, &out); err != nil {
		a.d.errorf(at.Expr.Range(), "invalid list", "%s must be a list of whole numbers", a.prefix+name)
		return
	}
	for _, n := range out {
		if n < lo || n > hi {
			a.d.errorf(at.Expr.Range(), "value out of range", "%s holds %d, outside [%d, %d]", a.prefix+name, n, lo, hi)
			return
		}
	}
	*dst = out
}

// content decodes a body against a schema.
func (d *decoder) content(body hcl.Body, s *hcl.BodySchema) (*hcl.BodyContent, bool) {
	c, diags := body.Content(s)
	d.diags = append(d.diags, diags...)
	return c, !diags.HasErrors()
}

func (d *decoder) rangeOf(field string) hcl.Range {
	if r, ok := d.ranges[field]; ok {
		return r
	}
	return d.ranges["job"]
}

// jobBlocks are the blocks a job holds; prune, regularize and factorize
// may repeat, the others appear at most once.
var jobBlocks = []hcl.BlockHeaderSchema{
	{Type: "model"}, {Type: "optimizer", LabelNames: []string{"kind"}}, {Type: "augment"},
	{Type: "prune", LabelNames: []string{"method"}}, {Type: "regularize", LabelNames: []string{"kind"}},
	{Type: "factorize"}, {Type: "sensitivity"}, {Type: "thin"}, {Type: "quantize"},
	{Type: "teacher"}, {Type: "distill"}, {Type: "checkpoint"}, {Type: "cluster"}, {Type: "target"},
	{Type: "post_training"},
}

func (d *decoder) job(b *hcl.Block, j *Job) {
	j.Name = b.Labels[0]
	d.ranges["job"] = b.DefRange
	c, ok := jobSection.decode(d, b, "", j, j, jobBlocks...)
	if !ok {
		return
	}
	seen := map[string]hcl.Range{}
	for _, blk := range c.Blocks {
		switch blk.Type {
		case "prune":
			d.prune(blk, len(j.Prune), j)
			continue
		case "regularize":
			d.regularize(blk, len(j.Regularize), j)
			continue
		case "factorize":
			d.factorize(blk, len(j.Factorize), j)
			continue
		}
		if prev, dup := seen[blk.Type]; dup {
			d.errorf(blk.DefRange, "duplicate block", "only one %s block is allowed (first at line %d)", blk.Type, prev.Start.Line)
			continue
		}
		seen[blk.Type] = blk.DefRange
		d.ranges[blk.Type] = blk.DefRange
		switch blk.Type {
		case "model":
			if c, ok := modelSection.decode(d, blk, "model.", &j.Model, j, layerBlock, hcl.BlockHeaderSchema{Type: "repeat", LabelNames: []string{"name"}}); ok {
				d.graph(c.Blocks, &j.Model, j)
				d.modelFile(blk, &j.Model)
				d.normalization("model.", &j.Model)
			}
		case "optimizer":
			d.optimizer(blk, j)
		case "augment":
			augmentSection.decode(d, blk, "augment.", &j.Augment, j)
		case "checkpoint":
			checkpointSection.decode(d, blk, "checkpoint.", &j.Checkpoint, j)
		case "thin":
			thinSection.decode(d, blk, "thin.", j, j)
		case "cluster":
			k := kmeansSection.fresh("")
			kmeansSection.decode(d, blk, "cluster.", &k, j)
			j.KMeans = &k
		case "quantize":
			d.quantize(blk, j)
		case "sensitivity":
			d.sensitivity(blk, j)
		case "target":
			d.target(blk, j)
		case "post_training":
			d.postTraining(blk, j)
		case "teacher":
			d.teacher(blk, j)
		case "distill":
			d.distill(blk, j)
		}
	}
	if _, ok := seen["model"]; !ok {
		d.errorf(b.DefRange, "missing model block", "job %q needs a model block with an arch", j.Name)
	}
	d.checkJob(j)
}

// ownValidation says whether the job's dataset holds out its own
// validation split (data.OwnValidation, or validation_fraction of a
// user's files).
func ownValidation(j *Job) bool {
	return data.OwnValidation(j.Dataset, j.DataDir) || j.ValidationFraction > 0
}

// checkJob makes the checks across blocks.
func (d *decoder) checkJob(j *Job) {
	if j.DataDir != "" && !filepath.IsAbs(j.DataDir) && d.filename != "" {
		j.DataDir = filepath.Join(filepath.Dir(d.filename), j.DataDir)
	}
	if f := j.ValidationFraction; f > 0 {
		switch r := d.rangeOf("validation_fraction"); {
		case !data.IsFiles(j.Dataset):
			d.errorf(r, "invalid validation_fraction", "validation_fraction holds out a validation split of your own files (%s); dataset %s holds out its last training samples (validation)", strings.Join(data.FileFormats, ", "), j.Dataset)
		case data.OwnValidation(j.Dataset, j.DataDir):
			d.errorf(r, "invalid validation_fraction", "%s holds a validation file; validation_fraction holds one out only where the folder has none", j.DataDir)
		}
	}
	if ownValidation(j) { // a corpus: its validation split is its own
		if _, set := d.ranges["validation"]; set && j.Validation != 0 {
			d.errorf(d.rangeOf("validation"), "invalid validation", "dataset %s holds out its own validation split (kjv: Proverbs and Romans; a text file: its second-last tenth; your files: the folder's val file or validation_fraction); leave validation out", j.Dataset)
		}
		j.Validation = 0
	}
	d.imageSize(j)
	if cl := j.KMeans; cl != nil {
		r := d.rangeOf("cluster")
		switch {
		case j.ThinAtEpoch > 0 || len(j.Factorize) > 0:
			d.errorf(r, "invalid cluster", "cluster cannot be combined with thin or factorize blocks (they change the clustered weights' shapes)")
		case j.Quantize != nil && slices.ContainsFunc(cl.Layers, func(l string) bool { return slices.Contains(j.Quantize.Layers, l) }):
			d.errorf(r, "invalid cluster", "a layer is both clustered and quantized; choose one way of sharing its values")
		}
	}
	for i, p := range j.Prune {
		// A window's last event falls on the first step after to_epoch, so
		// thinning must come strictly later.
		if j.ThinAtEpoch > 0 && p.Method != "nm" && float64(j.ThinAtEpoch) <= p.ToEpoch {
			d.errorf(d.rangeOf("thin.at_epoch"), "invalid window", "thin.at_epoch = %d is not after prune.%d's window (to_epoch = %v, whose last pruning step opens epoch %v); thin after pruning ends", j.ThinAtEpoch, i, p.ToEpoch, p.ToEpoch+1)
		}
	}
	for i, p := range j.Prune {
		if p.TargetsFrom == "sensitivity" {
			d.checkTargetsFrom(i, j)
		}
	}
	if j.Target != nil {
		for _, blk := range []string{"prune", "quantize", "regularize", "factorize", "thin", "cluster", "sensitivity"} {
			r, ok := d.ranges[blk]
			if !ok {
				r, ok = d.ranges[blk+".0"] // the first of a repeated block
			}
			if ok {
				d.errorf(r, "invalid "+blk+" with target", "the target search writes the pruning and quantization of its rounds itself; a %s block is not used with it", blk)
			}
		}
	}
	if j.Distill != nil && j.Teacher == nil && j.Target == nil { // a target search distils from its dense model
		d.errorf(d.rangeOf("distill"), "missing teacher", "distillation needs a teacher block (a teacher trained first inside the run)")
	}
	if j.Distill != nil && j.Distill.Offline {
		r := d.rangeOf("distill.offline")
		switch {
		case j.Augment.On():
			d.errorf(r, "invalid offline distillation", "offline teacher logits are computed once, on the samples as they are: with augment.shift = %d, flip = %v, truncate = %g "+
				"every batch is augmented anew, so the teacher must run each step (drop offline, or the augmentation)", j.Augment.Shift, j.Augment.Flip, j.Augment.Truncate)
		case j.Distill.Hint != nil:
			d.errorf(r, "invalid offline distillation", "a hint needs the teacher's hidden activations every step: it cannot be offline")
		}
	}
	if j.Distill != nil && j.Distill.Hint != nil {
		r := d.rangeOf("distill.hint")
		switch {
		case j.Teacher != nil && j.Teacher.Count > 1:
			d.errorf(r, "invalid hint", "a hint distils one teacher's layer; teacher.count = %d", j.Teacher.Count)
		case j.ThinAtEpoch > 0 || len(j.Factorize) > 0:
			d.errorf(r, "invalid hint", "a hint cannot be combined with thin or factorize blocks (they change the student layer's width)")
		}
	}
}

// checkTargetsFrom checks a prune block whose targets come from the
// sensitivity analysis.
func (d *decoder) checkTargetsFrom(i int, j *Job) {
	p := &j.Prune[i]
	r := d.rangeOf(fmt.Sprintf("prune.%d.targets_from", i))
	switch {
	case j.Sensitivity == nil:
		d.errorf(r, "missing sensitivity block", "prune.%d takes its targets from a sensitivity analysis, but the job has no sensitivity block", i)
	case p.Scope == "global":
		d.errorf(r, "invalid prune", "per-layer targets from sensitivity need scope = \"layer\"")
	case float64(j.Sensitivity.AtEpoch) > p.FromEpoch:
		d.errorf(r, "invalid window", "prune.%d starts at epoch %v, before the sensitivity analysis (after epoch %d)", i, p.FromEpoch, j.Sensitivity.AtEpoch)
	}
	for _, l := range p.Layers {
		if j.Sensitivity != nil && !slices.Contains(j.Sensitivity.Layers, l) {
			d.errorf(r, "invalid prune", "layer %q is not in the sensitivity analysis", l)
		}
	}
	if p.Target == 0 {
		p.Target = 0.99 // the scale the per-layer targets apply to (see trainer.PrunePolicy)
	}
}

func (d *decoder) optimizer(b *hcl.Block, j *Job) {
	d.ranges["optimizer.kind"] = b.LabelRanges[0]
	o := optimizerSection.fresh(b.Labels[0]) // a kind the plan checks
	if _, ok := optimizerSection.decode(d, b, "optimizer.", &o, j); !ok {
		return
	}
	j.Optimizer = o
	if o.Nesterov && o.Momentum == 0 {
		d.errorf(d.rangeOf("optimizer.nesterov"), "invalid optimizer", "nesterov needs momentum > 0")
	}
	if o.MinLR > o.LR {
		d.errorf(d.rangeOf("optimizer.min_lr"), "value out of range", "min_lr %v exceeds lr %v", o.MinLR, o.LR)
	}
	for _, k := range o.NoDecay {
		if !slices.Contains(NoDecayKinds, k) {
			d.errorf(d.rangeOf("optimizer.no_decay"), "unknown value", "optimizer.no_decay holds %q; allowed: %s", k, strings.Join(NoDecayKinds, ", "))
		}
	}
}

// labelled checks a repeated block's label and records its ranges; it
// returns the prefix of the block's fields ("prune.0.").
func (d *decoder) labelled(b *hcl.Block, i int, allowed []string, what string) (string, bool) {
	prefix := fmt.Sprintf("%s.%d.", b.Type, i)
	d.ranges[prefix[:len(prefix)-1]] = b.DefRange
	if len(b.Labels) == 0 {
		return prefix, true
	}
	d.ranges[prefix+"method"] = b.LabelRanges[0]
	if !slices.Contains(allowed, b.Labels[0]) {
		d.errorf(b.LabelRanges[0], "unknown "+what, "%s %q; allowed: %s", b.Type, b.Labels[0], strings.Join(allowed, ", "))
		return prefix, false
	}
	return prefix, true
}

// required reports a missing attribute of a block.
func (d *decoder) required(b *hcl.Block, c *hcl.BodyContent, name, format string, args ...any) {
	if _, ok := c.Attributes[name]; !ok {
		d.errorf(b.DefRange, "missing attribute", format, args...)
	}
}

func (d *decoder) prune(b *hcl.Block, i int, j *Job) {
	method := b.Labels[0]
	prefix, ok := d.labelled(b, i, PruneMethods, "prune method")
	if !ok {
		return
	}
	p := pruneSection.fresh(method)
	c, ok := pruneSection.decode(d, b, prefix, &p, j)
	if !ok {
		return
	}
	d.required(b, c, "layers", "prune %q needs layers = [\"fc1\", …]", method)
	if method != "nm" && p.TargetsFrom == "" {
		d.required(b, c, "target", "prune %q needs a target sparsity in [0, 1)", method)
	}
	if p.Target >= 1 {
		d.errorf(d.rangeOf(prefix+"target"), "value out of range", "%starget = %v; a sparsity must be in [0, 1)", prefix, p.Target)
	}
	if _, ok := c.Attributes["guard_undo"]; ok && p.GuardTolerance == 0 {
		d.errorf(d.rangeOf(prefix+"guard_undo"), "invalid guard", "%sguard_undo needs guard_tolerance", prefix)
	}
	set := 0
	for _, f := range []string{"every_epochs", "every_steps", "every_samples"} {
		if _, ok := c.Attributes[f]; ok {
			set++
		}
	}
	if set > 1 {
		d.errorf(b.DefRange, "conflicting attributes", "set one of every_epochs, every_steps, every_samples")
	}
	if set == 0 {
		p.EveryEpochs = 0.25
	}
	if p.Initial > p.Target && method != "nm" {
		d.errorf(d.rangeOf(prefix+"initial"), "value out of range", "%sinitial = %v exceeds target %v", prefix, p.Initial, p.Target)
	}
	if p.Schedule != "one_shot" && p.ToEpoch < p.FromEpoch {
		d.errorf(d.rangeOf(prefix+"to_epoch"), "invalid window", "%sto_epoch = %v ends before from_epoch = %v; the window must end at or after its start", prefix, p.ToEpoch, p.FromEpoch)
	}
	if p.Schedule != "one_shot" && p.ToEpoch > float64(j.Epochs) {
		d.errorf(d.rangeOf(prefix+"to_epoch"), "invalid window", "%sto_epoch = %v is past the run's %d epochs", prefix, p.ToEpoch, j.Epochs)
	}
	if method == "nm" && p.N > p.M {
		d.errorf(d.rangeOf(prefix+"n"), "value out of range", "%sn = %d exceeds m = %d; N:M keeps at most N of every M weights (N ≤ M)", prefix, p.N, p.M)
	}
	for _, other := range j.Prune {
		for _, l := range p.Layers {
			if slices.Contains(other.Layers, l) {
				d.errorf(d.rangeOf(prefix+"layers"), "layer pruned twice", "layer %q is already in an earlier prune block", l)
			}
		}
	}
	j.Prune = append(j.Prune, p)
}

func (d *decoder) regularize(b *hcl.Block, i int, j *Job) {
	kind := b.Labels[0]
	prefix, ok := d.labelled(b, i, RegularizeKinds, "regularizer")
	if !ok {
		return
	}
	r := regularizeSection.fresh(kind)
	c, ok := regularizeSection.decode(d, b, prefix, &r, j)
	if !ok {
		return
	}
	for _, req := range []string{"layers", "strength"} {
		d.required(b, c, req, "regularize %q needs %s", kind, req)
	}
	if _, ok := c.Attributes["final_strength"]; ok && r.ToEpoch == 0 {
		d.errorf(d.rangeOf(prefix+"final_strength"), "invalid regularizer", "%sfinal_strength ramps toward to_epoch; set to_epoch", prefix)
	}
	if r.ToEpoch > 0 && r.ToEpoch < r.FromEpoch {
		d.errorf(d.rangeOf(prefix+"to_epoch"), "invalid window", "%sto_epoch = %v ends before from_epoch = %v", prefix, r.ToEpoch, r.FromEpoch)
	}
	j.Regularize = append(j.Regularize, r)
}

func (d *decoder) factorize(b *hcl.Block, i int, j *Job) {
	prefix, _ := d.labelled(b, i, nil, "")
	f := factorizeSection.fresh("")
	c, ok := factorizeSection.decode(d, b, prefix, &f, j)
	if !ok {
		return
	}
	_, hasRank := c.Attributes["rank"]
	_, hasEnergy := c.Attributes["energy"]
	if hasRank == hasEnergy {
		d.errorf(b.DefRange, "invalid factorize", "set exactly one of rank and energy")
	}
	if f.AtEpoch >= j.Epochs {
		d.errorf(d.rangeOf(prefix+"at_epoch"), "value out of range", "%sat_epoch = %d leaves no epoch of the run's %d to fine-tune", prefix, f.AtEpoch, j.Epochs)
	}
	for _, other := range j.Factorize {
		if other.Layer == f.Layer {
			d.errorf(d.rangeOf(prefix+"layer"), "layer factorized twice", "layer %q is already factorized by an earlier block", f.Layer)
		}
	}
	j.Factorize = append(j.Factorize, f)
}

func (d *decoder) sensitivity(b *hcl.Block, j *Job) {
	s := sensitivitySection.fresh("")
	if _, ok := sensitivitySection.decode(d, b, "sensitivity.", &s, j); !ok {
		return
	}
	if len(s.Sparsities) == 0 || slices.ContainsFunc(s.Sparsities, func(x float64) bool { return !(x > 0 && x < 1) }) {
		d.errorf(d.rangeOf("sensitivity.sparsities"), "value out of range", "sensitivity.sparsities must be a non-empty list of sparsities in (0, 1)")
	}
	j.Sensitivity = &s
}

func (d *decoder) target(b *hcl.Block, j *Job) {
	t := targetSection.fresh("")
	if _, ok := targetSection.decode(d, b, "target.", &t, j); !ok {
		return
	}
	switch {
	case t.LatencyUs > 0 && t.LatencyFraction > 0:
		d.errorf(b.DefRange, "invalid target", "a target sets its latency budget once: latency_us, or latency_fraction of the dense model's")
	case t.LatencyUs == 0 && t.LatencyFraction == 0 && t.ModelBytes == 0 && t.MemoryBytes == 0:
		d.errorf(b.DefRange, "invalid target", "a target sets a budget: latency_us or latency_fraction, model_bytes, memory_bytes, or some of them")
	}
	if t.Profile != "" && !filepath.IsAbs(t.Profile) && d.filename != "" {
		t.Profile = filepath.Join(filepath.Dir(d.filename), t.Profile)
	}
	j.Target = &t
}

func (d *decoder) postTraining(b *hcl.Block, j *Job) {
	p := postTrainingSection.fresh("")
	if _, ok := postTrainingSection.decode(d, b, "post_training.", &p, j); !ok {
		return
	}
	switch {
	case p.Bits == 1 || p.Activations == 1:
		d.errorf(b.DefRange, "invalid post_training", "post_training: bits and activations are 2 to 8 (0: float)")
	case p.GPTQ && p.Bits == 0:
		d.errorf(d.rangeOf("post_training.gptq"), "invalid post_training", "post_training.gptq needs bits")
	case p.Prune != "" && p.Prune != "magnitude" && p.Prune != "sparsegpt":
		d.errorf(d.rangeOf("post_training.prune"), "invalid post_training", "post_training.prune %q: magnitude or sparsegpt", p.Prune)
	case p.Prune != "" && len(p.NM) == 0 && !(p.Sparsity > 0 && p.Sparsity < 1):
		d.errorf(d.rangeOf("post_training.prune"), "invalid post_training", "post_training.prune needs a sparsity in (0, 1) or nm = [N, M]")
	case len(p.NM) != 0 && (len(p.NM) != 2 || p.NM[0] < 0 || p.NM[1] < 1 || p.NM[0] > p.NM[1]):
		d.errorf(d.rangeOf("post_training.nm"), "invalid post_training", "post_training.nm is [N, M] with 0 ≤ N ≤ M")
	case p.Bits == 0 && p.Activations == 0 && p.Prune == "":
		d.errorf(b.DefRange, "invalid post_training", "post_training does nothing: give bits, activations or prune")
	}
	j.PostTraining = &p
}

func (d *decoder) quantize(b *hcl.Block, j *Job) {
	const prefix = "quantize."
	q := quantizeSection.fresh("")
	c, ok := quantizeSection.decode(d, b, prefix, &q, j)
	if !ok {
		return
	}
	if _, ok := c.Attributes["freeze_observers_epoch"]; ok {
		switch {
		case q.Activations == 0:
			d.errorf(d.rangeOf(prefix+"freeze_observers_epoch"), "invalid quantize", "freeze_observers_epoch needs activations = bits")
		case q.FreezeObserversEpoch <= q.FromEpoch:
			d.errorf(d.rangeOf(prefix+"freeze_observers_epoch"), "invalid quantize",
				"observers frozen at epoch %v, before they start at from_epoch = %v", q.FreezeObserversEpoch, q.FromEpoch)
		}
	}
	if len(q.Gradual) != len(q.GradualEpochs) {
		d.errorf(d.rangeOf(prefix+"gradual_epochs"), "invalid gradual quantization", "quantize.gradual has %d widths but gradual_epochs %d epochs", len(q.Gradual), len(q.GradualEpochs))
	}
	prev := q.FromEpoch
	for _, e := range q.GradualEpochs {
		if e <= prev || e > float64(j.Epochs) {
			d.errorf(d.rangeOf(prefix+"gradual_epochs"), "invalid gradual quantization", "quantize.gradual_epochs must rise after from_epoch = %v and stay within the run's %d epochs", q.FromEpoch, j.Epochs)
			break
		}
		prev = e
	}
	j.Quantize = &q
}

// modelFile checks that a model block names its network — by arch, or
// by a model file, which then holds it: what the block says of a network
// to build (for an empty file) is not used — and makes the file's path
// the recipe directory's.
func (d *decoder) modelFile(b *hcl.Block, m *Model) {
	if m.File == "" {
		if m.Arch == "" {
			d.errorf(b.DefRange, "missing model.arch", "a model block names its network: arch (a preset, or graph with layer blocks), or file (a trained model file)")
		}
		return
	}
	*m = Model{File: m.File, Mean: m.Mean, Std: m.Std}
	if !filepath.IsAbs(m.File) && d.filename != "" {
		m.File = filepath.Join(filepath.Dir(d.filename), m.File)
	}
	if abs, err := filepath.Abs(m.File); err == nil {
		m.File = abs
	}
}

// normalization checks a model block's mean and std: given together, as
// many of each, every deviation above 0 (the dataset's channels are the
// run's to check).
// imageSize checks image_size: a row count and a column count.
func (d *decoder) imageSize(j *Job) {
	if n := len(j.ImageSize); n != 0 && n != 2 {
		d.errorf(d.rangeOf("image_size"), "invalid image_size", "image_size has %d values: give [rows, cols]", n)
	}
}

func (d *decoder) normalization(prefix string, m *Model) {
	switch {
	case len(m.Mean) != len(m.Std):
		at := prefix + "std"
		if len(m.Std) == 0 {
			at = prefix + "mean"
		}
		d.errorf(d.rangeOf(at), "invalid input normalization", "%smean has %d values and %sstd %d: give both, as many of each: one value for every channel, or one per channel", prefix, len(m.Mean), prefix, len(m.Std))
	case slices.ContainsFunc(m.Std, func(v float64) bool { return !(v > 0) || math.IsInf(v, 0) }):
		d.errorf(d.rangeOf(prefix+"std"), "invalid input normalization", "%sstd %v: every deviation must be above 0 and finite", prefix, m.Std)
	case slices.ContainsFunc(m.Mean, func(v float64) bool { return math.IsNaN(v) || math.IsInf(v, 0) }):
		d.errorf(d.rangeOf(prefix+"mean"), "invalid input normalization", "%smean %v: every mean must be finite", prefix, m.Mean)
	}
}

func (d *decoder) teacher(b *hcl.Block, j *Job) {
	t := teacherSection.fresh("")
	c, ok := teacherSection.decode(d, b, "teacher.", &t, j)
	if !ok {
		return
	}
	d.normalization("teacher.", &t.Model)
	if _, ok := c.Attributes["file"]; ok && t.File != "" {
		// A trained model file: it holds the teacher, and what the block
		// says of one to train (for an empty file) is not used.
		t = Teacher{File: t.File, Count: 1, Model: Model{Mean: t.Model.Mean, Std: t.Model.Std}}
		if !filepath.IsAbs(t.File) && d.filename != "" {
			t.File = filepath.Join(filepath.Dir(d.filename), t.File)
		}
		if abs, err := filepath.Abs(t.File); err == nil {
			t.File = abs
		}
		j.Teacher = &t
		return
	}
	if t.Model.Arch == "graph" {
		d.errorf(d.rangeOf("teacher.arch"), "invalid teacher", "a teacher block cannot describe a graph model; train it as a run of its own and name its model.arrow in teacher.file")
		return
	}
	for _, req := range []string{"arch", "epochs"} {
		if _, ok := c.Attributes[req]; !ok {
			d.errorf(b.DefRange, "invalid teacher", "a teacher block needs arch and epochs (to train the teacher in the run), or a file that is not empty (a trained model.arrow)")
			return
		}
	}
	j.Teacher = &t // its architecture is the plan's to check
}

func (d *decoder) distill(b *hcl.Block, j *Job) {
	dd := distillSection.fresh("")
	c, ok := distillSection.decode(d, b, "distill.", &dd, j, hcl.BlockHeaderSchema{Type: "hint"})
	if !ok {
		return
	}
	for k, hb := range c.Blocks {
		if k > 0 {
			d.errorf(hb.DefRange, "duplicate block", "only one hint block is allowed")
			continue
		}
		d.ranges["distill.hint"] = hb.DefRange
		h := hintSection.fresh("")
		if _, ok := hintSection.decode(d, hb, "distill.hint.", &h, j); ok {
			dd.Hint = &h
		}
	}
	j.Distill = &dd
}
