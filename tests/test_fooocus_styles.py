"""Fooocus styles: names, order, templates, user files, Random Style."""

import json
import random

import pytest

from nodes.fooocus.styles import (
    FOOOCUS_V2,
    RANDOM_STYLE,
    StyleLibrary,
    UnknownStylesError,
    normalize_style_name,
)

# GET /v1/engines/styles of Fooocus 2.5.5 (Fooocus-API HEAD): the pseudo-styles, then the styles of
# sdxl_styles_fooocus, _sai, _mre, _twri, _diva and _marc_k3nt3l.json in file order, normalised.
UPSTREAM_STYLE_NAMES = [
    "Fooocus V2", "Random Style", "Fooocus Enhance", "Fooocus Semi Realistic", "Fooocus Sharp",
    "Fooocus Masterpiece", "Fooocus Photograph", "Fooocus Negative", "Fooocus Cinematic", "Fooocus Pony",
    "SAI 3D Model", "SAI Analog Film", "SAI Anime", "SAI Cinematic", "SAI Comic Book", "SAI Craft Clay",
    "SAI Digital Art", "SAI Enhance", "SAI Fantasy Art", "SAI Isometric", "SAI Line Art", "SAI Lowpoly",
    "SAI Neonpunk", "SAI Origami", "SAI Photographic", "SAI Pixel Art", "SAI Texture", "MRE Cinematic Dynamic",
    "MRE Spontaneous Picture", "MRE Artistic Vision", "MRE Dark Dream", "MRE Gloomy Art", "MRE Bad Dream",
    "MRE Underground", "MRE Surreal Painting", "MRE Dynamic Illustration", "MRE Undead Art",
    "MRE Elemental Art", "MRE Space Art", "MRE Ancient Illustration", "MRE Brave Art", "MRE Heroic Fantasy",
    "MRE Dark Cyberpunk", "MRE Lyrical Geometry", "MRE Sumi E Symbolic", "MRE Sumi E Detailed", "MRE Manga",
    "MRE Anime", "MRE Comic", "Ads Advertising", "Ads Automotive", "Ads Corporate", "Ads Fashion Editorial",
    "Ads Food Photography", "Ads Gourmet Food Photography", "Ads Luxury", "Ads Real Estate", "Ads Retail",
    "Artstyle Abstract", "Artstyle Abstract Expressionism", "Artstyle Art Deco", "Artstyle Art Nouveau",
    "Artstyle Constructivist", "Artstyle Cubist", "Artstyle Expressionist", "Artstyle Graffiti",
    "Artstyle Hyperrealism", "Artstyle Impressionist", "Artstyle Pointillism", "Artstyle Pop Art",
    "Artstyle Psychedelic", "Artstyle Renaissance", "Artstyle Steampunk", "Artstyle Surrealist",
    "Artstyle Typography", "Artstyle Watercolor", "Futuristic Biomechanical",
    "Futuristic Biomechanical Cyberpunk", "Futuristic Cybernetic", "Futuristic Cybernetic Robot",
    "Futuristic Cyberpunk Cityscape", "Futuristic Futuristic", "Futuristic Retro Cyberpunk",
    "Futuristic Retro Futurism", "Futuristic Sci Fi", "Futuristic Vaporwave", "Game Bubble Bobble",
    "Game Cyberpunk Game", "Game Fighting Game", "Game Gta", "Game Mario", "Game Minecraft", "Game Pokemon",
    "Game Retro Arcade", "Game Retro Game", "Game Rpg Fantasy Game", "Game Strategy Game",
    "Game Streetfighter", "Game Zelda", "Misc Architectural", "Misc Disco", "Misc Dreamscape",
    "Misc Dystopian", "Misc Fairy Tale", "Misc Gothic", "Misc Grunge", "Misc Horror", "Misc Kawaii",
    "Misc Lovecraftian", "Misc Macabre", "Misc Manga", "Misc Metropolis", "Misc Minimalist", "Misc Monochrome",
    "Misc Nautical", "Misc Space", "Misc Stained Glass", "Misc Techwear Fashion", "Misc Tribal",
    "Misc Zentangle", "Papercraft Collage", "Papercraft Flat Papercut", "Papercraft Kirigami",
    "Papercraft Paper Mache", "Papercraft Paper Quilling", "Papercraft Papercut Collage",
    "Papercraft Papercut Shadow Box", "Papercraft Stacked Papercut", "Papercraft Thick Layered Papercut",
    "Photo Alien", "Photo Film Noir", "Photo Glamour", "Photo Hdr", "Photo Iphone Photographic",
    "Photo Long Exposure", "Photo Neon Noir", "Photo Silhouette", "Photo Tilt Shift", "Cinematic Diva",
    "Abstract Expressionism", "Academia", "Action Figure", "Adorable 3D Character", "Adorable Kawaii",
    "Art Deco", "Art Nouveau", "Astral Aura", "Avant Garde", "Baroque", "Bauhaus Style Poster",
    "Blueprint Schematic Drawing", "Caricature", "Cel Shaded Art", "Character Design Sheet", "Classicism Art",
    "Color Field Painting", "Colored Pencil Art", "Conceptual Art", "Constructivism", "Cubism", "Dadaism",
    "Dark Fantasy", "Dark Moody Atmosphere", "Dmt Art Style", "Doodle Art", "Double Exposure",
    "Dripping Paint Splatter Art", "Expressionism", "Faded Polaroid Photo", "Fauvism", "Flat 2d Art",
    "Fortnite Art Style", "Futurism", "Glitchcore", "Glo Fi", "Googie Art Style", "Graffiti Art",
    "Harlem Renaissance Art", "High Fashion", "Idyllic", "Impressionism", "Infographic Drawing",
    "Ink Dripping Drawing", "Japanese Ink Drawing", "Knolling Photography", "Light Cheery Atmosphere",
    "Logo Design", "Luxurious Elegance", "Macro Photography", "Mandola Art", "Marker Drawing", "Medievalism",
    "Minimalism", "Neo Baroque", "Neo Byzantine", "Neo Futurism", "Neo Impressionism", "Neo Rococo",
    "Neoclassicism", "Op Art", "Ornate And Intricate", "Pencil Sketch Drawing", "Pop Art 2", "Rococo",
    "Silhouette Art", "Simple Vector Art", "Sketchup", "Steampunk 2", "Surrealism", "Suprematism", "Terragen",
    "Tranquil Relaxing Atmosphere", "Sticker Designs", "Vibrant Rim Light", "Volumetric Lighting",
    "Watercolor 2", "Whimsical And Playful", "Mk Chromolithography", "Mk Cross Processing Print",
    "Mk Dufaycolor Photograph", "Mk Herbarium", "Mk Punk Collage", "Mk Mosaic", "Mk Van Gogh",
    "Mk Coloring Book", "Mk Singer Sargent", "Mk Pollock", "Mk Basquiat", "Mk Andy Warhol",
    "Mk Halftone Print", "Mk Gond Painting", "Mk Albumen Print", "Mk Aquatint Print", "Mk Anthotype Print",
    "Mk Inuit Carving", "Mk Bromoil Print", "Mk Calotype Print", "Mk Color Sketchnote", "Mk Cibulak Porcelain",
    "Mk Alcohol Ink Art", "Mk One Line Art", "Mk Blacklight Paint", "Mk Carnival Glass", "Mk Cyanotype Print",
    "Mk Cross Stitching", "Mk Encaustic Paint", "Mk Embroidery", "Mk Gyotaku", "Mk Luminogram",
    "Mk Lite Brite Art", "Mk Mokume Gane", "Pebble Art", "Mk Palekh", "Mk Suminagashi", "Mk Scrimshaw",
    "Mk Shibori", "Mk Vitreous Enamel", "Mk Ukiyo E", "Mk Vintage Airline Poster", "Mk Vintage Travel Poster",
    "Mk Bauhaus Style", "Mk Afrofuturism", "Mk Atompunk", "Mk Constructivism", "Mk Chicano Art", "Mk De Stijl",
    "Mk Dayak Art", "Mk Fayum Portrait", "Mk Illuminated Manuscript", "Mk Kalighat Painting",
    "Mk Madhubani Painting", "Mk Pictorialism", "Mk Pichwai Painting", "Mk Patachitra Painting",
    "Mk Samoan Art Inspired", "Mk Tlingit Art", "Mk Adnate Style", "Mk Ron English Style",
    "Mk Shepard Fairey Style",
]


@pytest.fixture(scope="module")
def library():
    return StyleLibrary.load()


def test_every_fooocus_style_name_present_in_order(library):
    assert len(UPSTREAM_STYLE_NAMES) == 279
    assert library.names() == UPSTREAM_STYLE_NAMES
    assert library.style_names() == UPSTREAM_STYLE_NAMES[2:]


def test_every_template_has_a_prompt_slot_or_is_negative_only(library):
    negative_only = {"Fooocus Enhance", "Fooocus Semi Realistic", "Fooocus Negative"}
    for name in library.style_names():
        style = library.get(name)
        if name in negative_only:
            assert style.prompt == "" and style.negative_prompt
        else:
            assert style.prompt.count("{prompt}") == 1, name


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("sai-3d-model", "SAI 3D Model"),
        ("sai-analog film", "SAI Analog Film"),
        ("mre-sumi-e-symbolic", "MRE Sumi E Symbolic"),
        ("MK vintage-airline-poster", "Mk Vintage Airline Poster"),
        ("Flat 2D Art", "Flat 2d Art"),
        ("Avant-garde", "Avant Garde"),
        ("Ornate and Intricate", "Ornate And Intricate"),
        ("DMT Art Style", "Dmt Art Style"),
        ("futuristic-sci-fi", "Futuristic Sci Fi"),
        ("my (style)", "My (Style)"),
    ],
)
def test_name_normalisation(raw, expected):
    assert normalize_style_name(raw) == expected
    assert normalize_style_name(expected) == expected  # idempotent: our files hold final names


def test_apply_fills_template_and_returns_negative(library):
    style = library.get("SAI Anime")
    positive, negative = library.apply("SAI Anime", "a red fox")
    assert positive == [style.prompt.replace("{prompt}", "a red fox")]
    assert "a red fox" in positive[0]
    assert negative == [style.negative_prompt]


def test_apply_many_order_and_negative_merge(library):
    positive, negative = library.apply_many(["Fooocus Enhance", "Fooocus Sharp", "SAI Anime"], "a fox")
    sharp, anime, enhance = library.get("Fooocus Sharp"), library.get("SAI Anime"), library.get("Fooocus Enhance")
    # Enhance has no positive template: only the two templates, in selection order.
    assert positive == [sharp.prompt.replace("{prompt}", "a fox"), anime.prompt.replace("{prompt}", "a fox")]
    assert negative == [enhance.negative_prompt, sharp.negative_prompt, anime.negative_prompt]


def test_raw_prompt_first_when_no_style_uses_prompt(library):
    positive, negative = library.apply_many(["Fooocus Enhance", "Fooocus Negative"], "a fox")
    assert positive == ["a fox"]
    assert negative == [library.get("Fooocus Enhance").negative_prompt, library.get("Fooocus Negative").negative_prompt]
    assert library.apply_many([], "a fox") == (["a fox"], [])


def test_multiline_template_splits_into_parts(tmp_path):
    (tmp_path / "mine.json").write_text(json.dumps([
        {"name": "two-lines", "prompt": "first {prompt}\nsecond line", "negative_prompt": "bad\nworse"},
    ]))
    lib = StyleLibrary.load([tmp_path], include_builtin=False)
    assert lib.apply_many(["Two Lines"], "cat") == (["first cat", "second line"], ["bad", "worse"])


def test_unknown_names_are_listed(library):
    with pytest.raises(UnknownStylesError) as err:
        library.check(["SAI Anime", "Nope Style", FOOOCUS_V2, "Also Missing"])
    assert err.value.unknown == ["Nope Style", "Also Missing"]
    assert "Nope Style" in str(err.value) and "Also Missing" in str(err.value)
    assert library.check([FOOOCUS_V2, RANDOM_STYLE, "Mk Van Gogh"]) == [FOOOCUS_V2, RANDOM_STYLE, "Mk Van Gogh"]
    assert library.filter_known(["x", "SAI Anime"]) == ["SAI Anime"]


def test_user_style_files_load_after_ours_and_override(tmp_path, library):
    (tmp_path / "b_extra.json").write_text(json.dumps([
        {"name": "sai-anime", "prompt": "MY ANIME {prompt}", "negative_prompt": "mine"},
        {"name": "zz-new-style", "prompt": "{prompt} new"},
    ]))
    (tmp_path / "a_broken.json").write_text("{not json")  # skipped, like Fooocus
    lib = StyleLibrary.load([tmp_path])
    names = lib.names()
    assert names[: len(UPSTREAM_STYLE_NAMES)] == UPSTREAM_STYLE_NAMES  # override keeps the position
    assert names[len(UPSTREAM_STYLE_NAMES):] == ["Zz New Style"]
    assert lib.apply("SAI Anime", "cat") == (["MY ANIME cat"], ["mine"])
    assert lib.apply("Zz New Style", "cat") == (["cat new"], [])
    assert library.apply("SAI Anime", "cat") != lib.apply("SAI Anime", "cat")  # no shared state


def test_random_style_is_seeded_per_image(library):
    styles = library.style_names()
    picks = [library.resolve([RANDOM_STYLE, "SAI Anime", RANDOM_STYLE], random.Random(seed)) for seed in range(6)]
    again = [library.resolve([RANDOM_STYLE, "SAI Anime", RANDOM_STYLE], random.Random(seed)) for seed in range(6)]
    assert picks == again
    # Same draws as one rng.choice per occurrence over every style, in order.
    for seed, pick in enumerate(picks):
        rng = random.Random(seed)
        assert pick == [rng.choice(styles), "SAI Anime", rng.choice(styles)]
    assert len({p[0] for p in picks}) > 1
