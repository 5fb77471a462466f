from setuptools import find_packages, setup

setup(
    name="crackseg",
    version="0.1.0",
    description="Two-stage crack segmentation: a U-Net and a crack / no-crack gate on its frozen encoder",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    package_dir={"": "src"},
    packages=find_packages("src"),
    package_data={"crackseg": ["weights/*.pth", "outputs/templates/*.j2"]},
    python_requires=">=3.10",
    install_requires=[
        "torch==2.14.1",
        "torchvision==0.29.1",
        "catalyst==22.4",
        "accelerate==0.34.2",  # catalyst 22.4 crashes with accelerate>=1.0 (DistributedType.TPU was removed)
        "pillow>=10",
        "numpy>=1.24",
        "matplotlib>=3.7",
        "tensorboardX>=2.6",  # catalyst's TensorboardLogger writes through it
        "tqdm>=4.60",  # progress bars of evaluate and predict (catalyst uses it too)
        "scipy>=1.10",  # crack measurement: connected components, distance transforms
        "scikit-image>=0.22",  # crack measurement: skeletons and polyline simplification
        "av>=12",  # video frames through FFmpeg, one at a time (torchvision's video reader is deprecated)
        "onnx>=1.16",  # crackseg export: torch's ONNX exporter writes through onnx and onnxscript
        "onnxscript>=0.2",
        "onnxruntime>=1.18",  # runs the exported graphs (and their parity test)
        "jinja2>=3",  # report.html from a template with autoescape, not hand-escaped f-strings
    ],
    entry_points={"console_scripts": ["crackseg=crackseg.cli:main"]},
    extras_require={
        # georeferenced rasters (GeoTIFF/COG by windows) and GIS outputs (GeoJSON, GeoPackage): GDAL's bindings
        "gis": ["rasterio>=1.4", "fiona>=1.10"],
        "test": ["pytest>=7", "ruff>=0.5", "rasterio>=1.4", "fiona>=1.10"],
    },
)
