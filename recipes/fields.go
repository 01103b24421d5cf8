package recipes

import (
	"fmt"
	"math"
	"reflect"
	"slices"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclwrite"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/gocty"
)

// A field is one attribute of a recipe block, described once: its name,
// the Go value it fills, its default, the values it allows and when it is
// written back. Decoding (Parse), the defaults (Defaults) and writing
// (Job.HCL) all walk the same tables (job.go); what a table cannot say — a
// check across fields or blocks — is code in load.go.
type field[T any] struct {
	name string
	doc  string // one line for the reference (docs/recipes.md)
	// at points into the block's Go value: *float64, *int, *int64,
	// *uint64, *bool, *string, *[]int, *[]float64, *[]string or
	// *map[string]int.
	at  func(*T) any
	def any // the default, typed as at's target; nil: the zero value
	// lo and hi bound a number (or each number of a list or map);
	// loOpen excludes lo. upTo, when set, replaces hi with a bound taken
	// from the job (its epochs).
	lo, hi float64
	loOpen bool
	upTo   func(*Job) float64
	// choices are the strings allowed; nil: any (names the plan checks).
	choices  []string
	required bool
	// when says which block labels the field belongs to (nil: all); a
	// field that does not belong is neither accepted, defaulted nor
	// written.
	when func(label string) bool
	// omit says when the field is left out of a written recipe (nil:
	// always written).
	omit func(*T) bool
}

// is and isNot build a field's when.
func is(labels ...string) func(string) bool {
	return func(l string) bool { return slices.Contains(labels, l) }
}

func isNot(labels ...string) func(string) bool {
	return func(l string) bool { return !slices.Contains(labels, l) }
}

// A section is a block kind: its type, where its label lives, its fields.
type section[T any] struct {
	name   string
	label  func(*T) *string // nil: the block takes no label
	fields []field[T]
	// doc says what the block is, where it goes and how often, for the
	// reference; labels are the labels it takes (those a field's when
	// chooses among).
	doc    string
	labels []string
}

func (s section[T]) applies(f field[T], label string) bool { return f.when == nil || f.when(label) }

// fresh returns a block's value with every default for its label filled.
func (s section[T]) fresh(label string) T {
	var v T
	if s.label != nil {
		*s.label(&v) = label
	}
	for _, f := range s.fields {
		if f.def != nil && s.applies(f, label) {
			reflect.ValueOf(f.at(&v)).Elem().Set(reflect.ValueOf(f.def))
		}
	}
	return v
}

// schema is the block's accepted attributes for a label.
func (s section[T]) schema(label string) []hcl.AttributeSchema {
	var out []hcl.AttributeSchema
	for _, f := range s.fields {
		if s.applies(f, label) && !slices.ContainsFunc(out, func(a hcl.AttributeSchema) bool { return a.Name == f.name }) {
			out = append(out, hcl.AttributeSchema{Name: f.name, Required: f.required})
		}
	}
	return out
}

// decode checks b's body against the section and fills v (which holds
// the defaults), recording each attribute's range under prefix. It
// returns the body's content for the checks that follow, or false when the
// body does not fit the schema.
func (s section[T]) decode(d *decoder, b *hcl.Block, prefix string, v *T, j *Job, blocks ...hcl.BlockHeaderSchema) (*hcl.BodyContent, bool) {
	label := ""
	if s.label != nil {
		label = *s.label(v)
	}
	c, ok := d.content(b.Body, &hcl.BodySchema{Attributes: s.schema(label), Blocks: blocks})
	if !ok {
		return c, false
	}
	a := attrs{d: d, prefix: prefix, m: c.Attributes}
	for _, f := range s.fields {
		if s.applies(f, label) {
			a.field(f.name, f.at(v), f.bounds(j), f.choices)
		}
	}
	return c, true
}

// bounds are a field's limits for a job.
func (f field[T]) bounds(j *Job) limits {
	l := limits{lo: f.lo, hi: f.hi, loOpen: f.loOpen}
	if f.upTo != nil {
		l.hi = f.upTo(j)
	}
	return l
}

type limits struct {
	lo, hi float64
	loOpen bool
}

// field decodes one attribute, if present, into dst by dst's type.
func (a attrs) field(name string, dst any, l limits, choices []string) {
	switch p := dst.(type) {
	case *float64:
		a.float(name, p, l.lo, l.hi, l.loOpen)
	case *int:
		a.int(name, p, int(l.lo), int(l.hi))
	case *int64:
		n := int(*p)
		a.int(name, &n, int(l.lo), int(l.hi))
		*p = int64(n)
	case *uint64:
		n := int(*p)
		a.int(name, &n, int(l.lo), int(l.hi))
		*p = uint64(n)
	case *bool:
		a.bool(name, p)
	case *string:
		if choices != nil {
			a.choice(name, p, choices)
		} else {
			a.str(name, p)
		}
	case *[]int:
		a.ints(name, p, int(l.lo), int(l.hi))
	case *[]string:
		a.names(name, p)
	case *[]float64:
		a.floats(name, p)
	case *map[string]int:
		a.intMap(name, p, int(l.lo), int(l.hi))
	default:
		panic(fmt.Sprintf("recipes: field %s has unsupported type %T", name, dst))
	}
}

func (a attrs) names(name string, dst *[]string) {
	v, at, ok := a.value(name, cty.List(cty.String))
	if !ok {
		return
	}
	if err := gocty.FromCtyValue(v, dst); err != nil || len(*dst) == 0 {
		a.d.errorf(at.Expr.Range(), "invalid "+name, "%s%s must be a non-empty list of names", a.prefix, name)
	}
}

func (a attrs) floats(name string, dst *[]float64) {
	v, at, ok := a.value(name, cty.List(cty.Number))
	if !ok {
		return
	}
	if err := gocty.FromCtyValue(v, dst); err != nil || slices.ContainsFunc(*dst, func(x float64) bool { return math.IsInf(x, 0) }) {
		a.d.errorf(at.Expr.Range(), "invalid list", "%s%s must be a list of numbers", a.prefix, name)
	}
}

func (a attrs) intMap(name string, dst *map[string]int, lo, hi int) {
	v, at, ok := a.value(name, cty.Map(cty.Number))
	if !ok {
		return
	}
	if err := gocty.FromCtyValue(v, dst); err != nil {
		a.d.errorf(at.Expr.Range(), "invalid "+name, "%s%s maps layer names to whole numbers", a.prefix, name)
		return
	}
	for _, k := range sortedKeys(*dst) {
		if n := (*dst)[k]; n < lo || n > hi {
			a.d.errorf(at.Expr.Range(), "value out of range", "%s%s.%s = %d is outside [%d, %d]", a.prefix, name, k, n, lo, hi)
		}
	}
}

// write appends the block to parent with every field that belongs to its
// label and is not omitted, in table order.
func (s section[T]) write(parent *hclwrite.Body, v *T) *hclwrite.Body {
	label := ""
	var labels []string
	if s.label != nil {
		label = *s.label(v)
		labels = []string{label}
	}
	b := parent.AppendNewBlock(s.name, labels).Body()
	writeFields(b, s.fields, label, v)
	return b
}

// writeFields sets fs's attributes of v on b.
func writeFields[T any](b *hclwrite.Body, fs []field[T], label string, v *T) {
	for _, f := range fs {
		if (f.when == nil || f.when(label)) && (f.omit == nil || !f.omit(v)) {
			b.SetAttributeValue(f.name, ctyOf(f.at(v)))
		}
	}
}

// ctyOf is a field's Go value as HCL writes it.
func ctyOf(p any) cty.Value {
	switch p := p.(type) {
	case *float64:
		return cty.NumberFloatVal(*p)
	case *int:
		return cty.NumberIntVal(int64(*p))
	case *int64:
		return cty.NumberIntVal(*p)
	case *uint64:
		return cty.NumberUIntVal(*p)
	case *bool:
		return cty.BoolVal(*p)
	case *string:
		return cty.StringVal(*p)
	case *[]int:
		return listOf(*p, func(n int) cty.Value { return cty.NumberIntVal(int64(n)) }, cty.Number)
	case *[]float64:
		return listOf(*p, cty.NumberFloatVal, cty.Number)
	case *[]string:
		return listOf(*p, cty.StringVal, cty.String)
	case *map[string]int:
		m := map[string]cty.Value{}
		for k, n := range *p {
			m[k] = cty.NumberIntVal(int64(n))
		}
		if len(m) == 0 {
			return cty.MapValEmpty(cty.Number)
		}
		return cty.MapVal(m)
	}
	panic(fmt.Sprintf("recipes: cannot write %T", p))
}

func listOf[E any](xs []E, f func(E) cty.Value, elem cty.Type) cty.Value {
	if len(xs) == 0 {
		return cty.ListValEmpty(elem)
	}
	vs := make([]cty.Value, len(xs))
	for i, x := range xs {
		vs[i] = f(x)
	}
	return cty.ListVal(vs)
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}
