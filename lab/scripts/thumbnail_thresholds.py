# Frozen lab record: ran at commit b6442c3 (2026-12-06) with the provenance reader uncommitted on top; kept as run, not maintained. See lab/README.md.
"""Where should the EXIF thumbnail comparison draw its lines? (docs/provenance.md, "The EXIF thumbnail")

150 training photos (no EXIF of their own): a "camera" thumbnail of each made by four resamplers,
sharpening, gamma 0.85-1.15 and JPEG 60-90, compared with the photo itself (same), with another
photo (different) and with the photo after a patch of another covering 6% was pasted (local);
then the 20 PSBattles pairs of real-val, thumbnail from the original, compared with the forgery.
Printed: correlation and worst grid cell per group. Result: same r >= 0.973, cell <= 0.44;
different r <= 0.55; local 6% flagged 56%; PSBattles 8 of 20 flagged (those covering ~10%+).
"""
import glob, io, random, json
import numpy as np, cv2
from PIL import Image, ImageFilter
from imlscan.scanning.provenance.exif import compare_thumbnail
random.seed(0); rng = np.random.default_rng(0)
hosts = sorted(glob.glob('/work/shared/data/hosts/**/*.jpg', recursive=True))
random.shuffle(hosts); hosts = hosts[:150]
def load(p): return np.asarray(Image.open(p).convert('RGB'))
def camthumb(rgb, k):
    im = Image.fromarray(rgb); w,h = im.size; f = 160/max(w,h)
    size = (max(1,round(w*f)), max(1,round(h*f)))
    res = [Image.LANCZOS, Image.BILINEAR, Image.BOX, Image.NEAREST][k%4]
    t = im.resize(size, res)
    if k%3==0: t = t.filter(ImageFilter.UnsharpMask(1, 120, 2))
    a = np.asarray(t).astype(np.float32)/255
    g = [0.85,1.0,1.15][k%3]; a = (a**g*255).clip(0,255).astype(np.uint8)
    b = io.BytesIO(); Image.fromarray(a).save(b,'JPEG',quality=[60,75,90][k%3]); 
    return np.asarray(Image.open(b).convert('RGB'))
same, diff, local = [], [], []
imgs = [load(p) for p in hosts]
for k,rgb in enumerate(imgs):
    t = camthumb(rgb, k)
    c = compare_thumbnail(t, rgb); same.append((c['correlation'], c['max_cell_difference']))
    other = imgs[(k+7)%len(imgs)]
    o = cv2.resize(other, (rgb.shape[1], rgb.shape[0]))
    c = compare_thumbnail(t, o); diff.append((c['correlation'], c['max_cell_difference']))
    # local edit: paste a patch of other covering ~6% area (a quarter cell ~ 1/64 .. ) 
    e = rgb.copy(); h,w = e.shape[:2]; ph, pw = int(h*0.25), int(w*0.25)
    y, x = rng.integers(0, h-ph), rng.integers(0, w-pw)
    e[y:y+ph, x:x+pw] = o[y:y+ph, x:x+pw]
    c = compare_thumbnail(t, e); local.append((c['correlation'], c['max_cell_difference']))
for name, v in (('same', same), ('different', diff), ('local 6%', local)):
    r = np.array([a for a,b in v if a is not None]); m = np.array([b for a,b in v if b is not None])
    print(f"{name:10s} n={len(r)} r: min {r.min():.3f} p5 {np.percentile(r,5):.3f} p50 {np.median(r):.3f} p95 {np.percentile(r,95):.3f} max {r.max():.3f} | cell: p5 {np.percentile(m,5):.3f} p50 {np.median(m):.3f} p95 {np.percentile(m,95):.3f} max {m.max():.3f}")
# psbattles pairs
pairs = json.load(open('/work/shared/data/real-val/psbattles/pairs.json'))
print(pairs[:2])
print("by resampler (same):")
for k in range(4):
    v = [same[i] for i in range(len(same)) if i%4==k]
    print(k, min(a for a,b in v), max(b for a,b in v))
det = np.mean([(a is not None and a < 0.85) or (b is not None and b > 0.6) for a,b in local])
fp = np.mean([(a is not None and a < 0.85) or (b is not None and b > 0.6) for a,b in same])
print("local 6% flagged:", det, "same flagged:", fp)
import os
pairs = json.load(open('/work/shared/data/real-val/psbattles/pairs.json'))
root='/work/shared/data/real-val/psbattles/'
orig = {os.path.basename(a).split('_')[0]: a for a,b in pairs if b=='Negative'}
res=[]
for a,b in pairs:
    if b=='Negative': continue
    key=os.path.basename(a).split('_')[0]
    if key not in orig: continue
    o = load(root+orig[key]); f = load(root+a)
    if o.shape != f.shape: f2 = cv2.resize(f,(o.shape[1],o.shape[0]))
    else: f2=f
    m = np.asarray(Image.open(root+b).convert('L'))>127
    c = compare_thumbnail(camthumb(o,1), f2)
    res.append((key, o.shape[:2], f.shape[:2], round(m.mean(),3), c['correlation'], c['max_cell_difference'], c['aspect_matches'], c['mismatch']))
for r in res: print(r)
